"""Compressed pages in RAM, like kernel zram: the first version of the store.

The page map is a dict from page index to an entry, so a device costs
nothing until written:
  int            the page is one 64-bit word repeated (zeros included);
  bytes < page   the page compressed by the codec;
  bytes == page  the page raw: it did not compress below the huge threshold.
"""
import sys
import threading

from trueno_ublk._shim import ffi, lib
from trueno_ublk.stores.base import Store
from trueno_ublk.units import PAGE_SIZE

ZERO_PAGE = bytes(PAGE_SIZE)
LOCK_STRIPES = 64


class CompressedRamStore(Store):
    name = "ram"

    def __init__(self, size: int, codec, huge_threshold: int = PAGE_SIZE * 3 // 4):
        self.size = size
        self.codec = codec
        self.huge_threshold = huge_threshold
        self._pages: dict[int, int | bytes] = {}
        # Every change of a page happens under its stripe's lock, so that a
        # partial-page read-modify-write never loses a concurrent write.
        self._locks = [threading.Lock() for _ in range(LOCK_STRIPES)]
        self._scratch = threading.local()

    # -- whole pages -------------------------------------------------------

    def _encode(self, page) -> int | bytes:
        if lib.shim_page_is_filled(ffi.from_buffer(page), PAGE_SIZE):
            return int.from_bytes(page[:8], sys.byteorder)
        payload = self.codec.compress(page)
        if payload is None or len(payload) > self.huge_threshold:
            return bytes(page)
        return payload

    def _decode_into(self, index: int, out) -> None:
        entry = self._pages.get(index)
        if entry is None:
            out[:] = ZERO_PAGE
        elif type(entry) is int:
            lib.shim_page_fill(ffi.from_buffer(out), PAGE_SIZE, entry)
        elif len(entry) == PAGE_SIZE:
            out[:] = entry
        else:
            out[:] = self.codec.decompress(entry, PAGE_SIZE)

    def _page_buffer(self) -> memoryview:
        scratch = self._scratch
        try:
            return scratch.page
        except AttributeError:
            scratch.page = memoryview(bytearray(PAGE_SIZE))
            return scratch.page

    def _patch(self, index: int, start: int, data) -> None:
        """Replace part of one page: `data` at byte `start` within it."""
        with self._locks[index % LOCK_STRIPES]:
            page = self._page_buffer()
            self._decode_into(index, page)
            page[start:start + len(data)] = data
            self._pages[index] = self._encode(page)

    # -- the Store interface -----------------------------------------------

    def read(self, offset, dest):
        pos, end = 0, len(dest)
        while pos < end:
            index, start = divmod(offset + pos, PAGE_SIZE)
            chunk = min(PAGE_SIZE - start, end - pos)
            if chunk == PAGE_SIZE:
                self._decode_into(index, dest[pos:pos + PAGE_SIZE])
            else:
                page = self._page_buffer()
                self._decode_into(index, page)
                dest[pos:pos + chunk] = page[start:start + chunk]
            pos += chunk

    def write(self, offset, src):
        pos, end = 0, len(src)
        while pos < end:
            index, start = divmod(offset + pos, PAGE_SIZE)
            chunk = min(PAGE_SIZE - start, end - pos)
            if chunk == PAGE_SIZE:
                entry = self._encode(src[pos:pos + PAGE_SIZE])   # outside the lock
                with self._locks[index % LOCK_STRIPES]:
                    self._pages[index] = entry
            else:
                self._patch(index, start, src[pos:pos + chunk])
            pos += chunk

    def discard(self, offset, length):
        first, head = divmod(offset, PAGE_SIZE)
        last, tail = divmod(offset + length, PAGE_SIZE)   # `last` is exclusive
        if first == last:                                  # inside one page
            self._patch(first, head, ZERO_PAGE[:length])
            return
        if head:
            self._patch(first, head, ZERO_PAGE[head:])
            first += 1
        if tail:
            self._patch(last, 0, ZERO_PAGE[:tail])
        pages = self._pages
        # Walk whichever is smaller: the range or the pages actually stored.
        if last - first > len(pages):
            doomed = [i for i in list(pages) if first <= i < last]
        else:
            doomed = range(first, last)
        for index in doomed:
            pages.pop(index, None)

    def stats(self):
        entries = list(self._pages.values())
        same = sum(1 for e in entries if type(e) is int)
        huge = sum(1 for e in entries if type(e) is bytes and len(e) == PAGE_SIZE)
        compressed = sum(len(e) for e in entries if type(e) is bytes)
        return {
            "pages_stored": len(entries),
            "same_pages": same,
            "huge_pages": huge,
            "orig_data_size": len(entries) * PAGE_SIZE,
            "compr_data_size": compressed,
        }
