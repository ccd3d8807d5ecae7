"""Compressed pages in RAM, like kernel zram, kept in a shared-memory arena.

A write compresses the page into a fresh slot, publishes the slot in the
page's map entry with one 64-bit store, then frees the old slot: the arena
is consistent at every instant. Pages that are one repeated 64-bit word
(zeros included) cost only their map entry and fill word; pages that do not
compress below the huge threshold are stored raw and counted as huge.
"""
import sys
import threading

from trueno_ublk._shim import ffi, lib
from trueno_ublk.stores.arena import CHUNK_SIZE, Arena, Entry
from trueno_ublk.stores.base import Store
from trueno_ublk.units import PAGE_SIZE

ZERO_PAGE = bytes(PAGE_SIZE)
LOCK_STRIPES = 64
PAGES_PER_MAP_PAGE = PAGE_SIZE // 8
DEFAULT_HUGE_THRESHOLD = PAGE_SIZE * 3 // 4


class CompressedRamStore(Store):
    name = "ram"

    def __init__(self, size: int, codec, huge_threshold: int = DEFAULT_HUGE_THRESHOLD):
        if not 0 < huge_threshold <= PAGE_SIZE:
            raise ValueError(f"huge threshold must be between 1 and {PAGE_SIZE} bytes")
        self.size = size
        self.codec = codec
        self.huge_threshold = huge_threshold
        self.pages = (size + PAGE_SIZE - 1) // PAGE_SIZE
        self.arena = Arena(self.pages)
        self._entries = self.arena.entries
        self._fills = self.arena.fills
        self._view = self.arena.view
        # One flag per map page ever written: reading or discarding an
        # untouched part of the map must not fault it in.
        self._touched = bytearray((self.pages + PAGES_PER_MAP_PAGE - 1) // PAGES_PER_MAP_PAGE)
        # A page is read or changed only under its stripe's lock, so a slot
        # is never freed under a reader and a partial-page read-modify-write
        # never loses a concurrent write. _lock guards the allocator and the
        # counters; it is taken inside a stripe lock, never the other way.
        self._stripes = [threading.Lock() for _ in range(LOCK_STRIPES)]
        self._lock = threading.Lock()
        self._scratch = threading.local()
        self.pages_stored = 0
        self.same_pages = 0
        self.huge_pages = 0
        self.compr_data_size = 0
        self.pages_compacted = 0
        self.notify_free = 0
        self.mem_used_max = 0

    # -- one whole page -------------------------------------------------------

    def _decode_into(self, index: int, out) -> None:
        """Copy page `index` into `out`; the caller holds its stripe lock."""
        if not self._touched[index // PAGES_PER_MAP_PAGE]:
            out[:] = ZERO_PAGE
            return
        entry = self._entries[index]
        if not entry:
            out[:] = ZERO_PAGE
        elif entry & Entry.SAME:
            lib.shim_page_fill(ffi.from_buffer(out), PAGE_SIZE, self._fills[index])
        else:
            chunk, slot, length = Entry.unpack(entry)
            offset = self.arena.slot_offset(chunk, slot)
            payload = self._view[offset:offset + length]
            out[:] = payload if length == PAGE_SIZE else self.codec.decompress(payload, PAGE_SIZE)

    def _store_page(self, index: int, page) -> None:
        """Store one page; the caller holds its stripe lock."""
        if lib.shim_page_is_filled(ffi.from_buffer(page), PAGE_SIZE):
            self._touched[index // PAGES_PER_MAP_PAGE] = 1
            self._fills[index] = int.from_bytes(page[:8], sys.byteorder)
            with self._lock:
                self._publish(index, Entry.SAME)
                self.same_pages += 1
            return
        payload = self.codec.compress(page)
        if payload is None or len(payload) > self.huge_threshold:
            payload = page
        length = len(payload)
        with self._lock:
            chunk, slot = self.arena.alloc(length)
        offset = self.arena.slot_offset(chunk, slot)
        self._view[offset:offset + length] = payload
        self._touched[index // PAGES_PER_MAP_PAGE] = 1
        with self._lock:
            self._publish(index, Entry.stored(chunk, slot, length))
            self.compr_data_size += length
            if length == PAGE_SIZE:
                self.huge_pages += 1

    def _publish(self, index: int, entry: int) -> None:
        """Point page `index` at `entry`, then free what it held before.
        The caller holds the page's stripe lock and self._lock."""
        old = self._entries[index]
        self._entries[index] = entry
        if entry:
            self.pages_stored += 1
        if not old:
            return
        self.pages_stored -= 1
        if old & Entry.SAME:
            self.same_pages -= 1
            return
        chunk, slot, length = Entry.unpack(old)
        self.compr_data_size -= length
        if length == PAGE_SIZE:
            self.huge_pages -= 1
        self.arena.free(chunk, slot)

    def _page_buffer(self) -> memoryview:
        scratch = self._scratch
        try:
            return scratch.page
        except AttributeError:
            scratch.page = memoryview(bytearray(PAGE_SIZE))
            return scratch.page

    def _patch(self, index: int, start: int, data) -> None:
        """Replace part of one page: `data` at byte `start` within it."""
        with self._stripes[index % LOCK_STRIPES]:
            page = self._page_buffer()
            self._decode_into(index, page)
            page[start:start + len(data)] = data
            self._store_page(index, page)

    def _drop(self, index: int) -> None:
        if not self._touched[index // PAGES_PER_MAP_PAGE] or not self._entries[index]:
            return
        with self._stripes[index % LOCK_STRIPES], self._lock:
            self._publish(index, 0)
            self.notify_free += 1

    # -- the Store interface --------------------------------------------------

    def read(self, offset, dest):
        pos, end = 0, len(dest)
        stripes = self._stripes
        while pos < end:
            index, start = divmod(offset + pos, PAGE_SIZE)
            chunk = min(PAGE_SIZE - start, end - pos)
            with stripes[index % LOCK_STRIPES]:
                if chunk == PAGE_SIZE:
                    self._decode_into(index, dest[pos:pos + PAGE_SIZE])
                else:
                    page = self._page_buffer()
                    self._decode_into(index, page)
                    dest[pos:pos + chunk] = page[start:start + chunk]
            pos += chunk

    def write(self, offset, src):
        pos, end = 0, len(src)
        stripes = self._stripes
        while pos < end:
            index, start = divmod(offset + pos, PAGE_SIZE)
            chunk = min(PAGE_SIZE - start, end - pos)
            if chunk == PAGE_SIZE:
                with stripes[index % LOCK_STRIPES]:
                    self._store_page(index, src[pos:pos + PAGE_SIZE])
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
        index = first
        while index < last:
            map_page = index // PAGES_PER_MAP_PAGE
            run_end = min(last, (map_page + 1) * PAGES_PER_MAP_PAGE)
            if self._touched[map_page]:
                for i in range(index, run_end):
                    self._drop(i)
                if run_end - index == PAGES_PER_MAP_PAGE:
                    self._release_map_page(map_page)
            index = run_end

    def _release_map_page(self, map_page: int) -> None:
        first = map_page * PAGES_PER_MAP_PAGE
        entries = self._entries
        with self._lock:
            # A write that raced into the range keeps the page.
            if any(entries[first:first + PAGES_PER_MAP_PAGE]):
                return
            self._touched[map_page] = 0
            self.arena.release_map_range(first, first + PAGES_PER_MAP_PAGE)

    def set_mem_limit(self, limit: int) -> None:
        self.arena.mem_limit = limit

    def reset_mem_used_max(self) -> None:
        with self._lock:
            self.mem_used_max = 0
            self.arena.peak_live_chunks = self.arena.live_chunks

    def stats(self) -> dict:
        mem_used = self.arena.resident_bytes() + self.arena.metadata_bytes() + len(self._touched)
        with self._lock:
            # The arena notes its chunk peak as it happens; the rest of the
            # figure (map pages, bookkeeping) is taken as it is now.
            peak = mem_used + (self.arena.peak_live_chunks - self.arena.live_chunks) * CHUNK_SIZE
            self.mem_used_max = max(self.mem_used_max, mem_used, peak)
            return {
                "orig_data_size": self.pages_stored * PAGE_SIZE,
                "compr_data_size": self.compr_data_size,
                "mem_used_total": mem_used,
                "mem_limit": self.arena.mem_limit,
                "mem_used_max": self.mem_used_max,
                "same_pages": self.same_pages,
                "pages_compacted": self.pages_compacted,
                "huge_pages": self.huge_pages,
                "pages_stored": self.pages_stored,
                "notify_free": self.notify_free,
            }

    # -- compaction -----------------------------------------------------------

    def compact(self) -> int:
        """Move payloads out of sparsely used chunks into fuller ones of the
        same class, so that chunks empty and their memory goes back.
        Returns the number of 4 KiB pages given back."""
        arena = self.arena
        with self._lock:
            crowded = [sorted(p, key=arena.chunk_used.__getitem__) for p in arena.partial if len(p) > 1]
        if not crowded:
            return 0
        candidates = {c for chunks in crowded for c in chunks}
        owners: dict[int, list[tuple[int, int]]] = {c: [] for c in candidates}
        for map_page, touched in enumerate(self._touched):
            if not touched:
                continue
            base = map_page * PAGES_PER_MAP_PAGE
            for i, entry in enumerate(self._entries[base:min(base + PAGES_PER_MAP_PAGE, self.pages)]):
                if entry & Entry.STORED:
                    chunk = Entry.unpack(entry)[0]
                    if chunk in candidates:
                        owners[chunk].append((base + i, entry))
        freed = 0
        for chunks in crowded:
            lo, hi = 0, len(chunks) - 1
            while lo < hi:
                for index, entry in owners[chunks[lo]]:
                    while hi > lo and not arena.has_room(chunks[hi]):
                        hi -= 1
                    if hi == lo:
                        break
                    if self._move(index, entry, chunks[hi]):
                        freed += CHUNK_SIZE // PAGE_SIZE
                lo += 1
        with self._lock:
            self.pages_compacted += freed
        return freed

    def _move(self, index: int, expected: int, target: int) -> bool:
        """Move page `index`'s payload into chunk `target`, unless the page
        changed meanwhile. True when that emptied (and released) its chunk."""
        arena = self.arena
        with self._stripes[index % LOCK_STRIPES], self._lock:
            chunk, slot, length = Entry.unpack(expected)
            if (self._entries[index] != expected or not arena.has_room(target)
                    or arena.chunk_class[target] != arena.chunk_class[chunk]):
                return False
            new_slot = arena.alloc_in(target)
            src, dst = arena.slot_offset(chunk, slot), arena.slot_offset(target, new_slot)
            self._view[dst:dst + length] = self._view[src:src + length]
            self._entries[index] = Entry.stored(target, new_slot, length)
            return arena.free(chunk, slot)
