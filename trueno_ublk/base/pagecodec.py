"""The page codec the store uses, as a library: 4 KiB pages compressed one
by one with LZ4, LZ4HC or zstd at any level, and the same-fill check that
spares most zero pages the codec.

    from trueno_ublk.base.pagecodec import PageCodec, is_same_filled

    codec = PageCodec("zstd:6")
    payload = codec.compress(page)           # None: the page does not compress
    assert codec.decompress(payload) == page
    payloads = codec.compress_pages(data, threads=4)    # len(data) a multiple of 4096

A PageCodec holds one C context: one thread at a time, as one of the
store's queue threads. The batch calls split their pages across `threads`
threads, each with its own context, and release the GIL while C runs.
"""
import concurrent.futures
import itertools
import threading

from trueno_ublk._native import ffi, lib
from trueno_ublk.base.codecs import codec_for
from trueno_ublk.base.units import PAGE_SIZE


def is_same_filled(page) -> bool:
    """Whether the page is one 8-byte word repeated (zero pages are)."""
    if len(page) != PAGE_SIZE:
        raise ValueError(f"a page is {PAGE_SIZE} bytes, not {len(page)}")
    return bool(lib.ps_page_is_filled(ffi.from_buffer(page)))


class PageCodec:
    """Compress and decompress 4 KiB pages with `algorithm` ("lz4",
    "lz4hc", "zstd", "zstd:LEVEL" or "none")."""

    def __init__(self, algorithm: str = "lz4"):
        self.codec = codec_for(algorithm)
        self.algorithm = self.codec.name
        self._local = threading.local()

    def _context(self):
        """This thread's C context, made on its first call."""
        ctx = getattr(self._local, "ctx", None)
        if ctx is None:
            ctx = lib.ps_codec_new(self.codec.kind, self.codec.level)
            if ctx == ffi.NULL:
                raise MemoryError("no memory for a codec context")
            ctx = self._local.ctx = ffi.gc(ctx, lib.ps_scratch_free)
        return ctx

    def compress(self, page) -> bytes | None:
        """The page's payload, or None if it does not compress below a page."""
        packed, lens = self._compress(_pages_of(page))
        return bytes(packed[:lens[0]]) if lens[0] else None

    def decompress(self, payload) -> bytes:
        """The page a payload of compress() came from."""
        if not 0 < len(payload) < PAGE_SIZE:
            raise ValueError(f"a payload is 1 to {PAGE_SIZE - 1} bytes, not {len(payload)}")
        return bytes(self._decompress(payload, [len(payload)]))

    def compress_pages(self, data, threads: int = 1) -> list[bytes | None]:
        """compress() of each page of `data`, in `threads` threads."""
        pages = _pages_of(data)
        parts = _in_threads(lambda first, n: self._compress(pages[first * PAGE_SIZE:(first + n) * PAGE_SIZE]),
                            _split(len(pages) // PAGE_SIZE, threads))
        payloads = []
        for packed, lens in parts:
            ends = itertools.accumulate(n or PAGE_SIZE for n in lens)
            payloads += [bytes(packed[end - n:end]) if n else None for n, end in zip(lens, ends, strict=True)]
        return payloads

    def decompress_pages(self, payloads: list, pages=None, threads: int = 1) -> bytes:
        """The pages of compress_pages()' payloads, joined; where a payload
        is None, the page itself is taken from `pages` at its place."""
        if pages is None and None in payloads:
            raise ValueError("a page that did not compress needs `pages`")
        lens = [len(p) if p is not None else 0 for p in payloads]
        if 0 in lens:
            if any(p is not None and not len(p) for p in payloads):
                raise ValueError("an empty payload is not one of compress_pages()'")
            view = memoryview(pages).cast("B")
            payloads = [p if p is not None else view[i * PAGE_SIZE:(i + 1) * PAGE_SIZE]
                        for i, p in enumerate(payloads)]
        packed = memoryview(b"".join(payloads))
        chunks = _split(len(payloads), threads)
        starts = [0, *itertools.accumulate(n or PAGE_SIZE for n in lens)]
        return b"".join(_in_threads(lambda first, n: self._decompress(packed[starts[first]:starts[first + n]],
                                                                      lens[first:first + n]), chunks))

    def _compress(self, pages) -> tuple[memoryview, list[int]]:
        n = len(pages) // PAGE_SIZE
        packed, lens = bytearray(len(pages)), ffi.new("uint32_t[]", n)
        lib.ps_codec_compress(self._context(), ffi.from_buffer(pages), n, ffi.from_buffer(packed), lens)
        return memoryview(packed), list(lens)

    def _decompress(self, packed, lens: list[int]) -> bytearray:
        out = bytearray(len(lens) * PAGE_SIZE)
        if lib.ps_codec_decompress(self._context(), ffi.from_buffer(packed), len(packed), lens, len(lens),
                                   ffi.from_buffer(out)) < 0:
            raise ValueError(f"a payload is not {self.algorithm} of a {PAGE_SIZE}-byte page")
        return out


def _pages_of(data) -> memoryview:
    view = memoryview(data).cast("B")
    if not view.nbytes or view.nbytes % PAGE_SIZE:
        raise ValueError(f"pages are {PAGE_SIZE} bytes each: {view.nbytes} bytes is not a whole number of them")
    return view


def _split(n: int, threads: int) -> list[tuple[int, int]]:
    """(first, count) for each of up to `threads` parts of n items."""
    threads = max(1, min(threads, n))
    step = -(-n // threads)
    return [(first, min(step, n - first)) for first in range(0, n, step)]


def _in_threads(work, chunks: list[tuple[int, int]]) -> list:
    if len(chunks) == 1:
        return [work(*chunks[0])]
    with concurrent.futures.ThreadPoolExecutor(len(chunks)) as pool:
        return list(pool.map(lambda chunk: work(*chunk), chunks))
