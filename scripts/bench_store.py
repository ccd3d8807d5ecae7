"""scripts/bench store: pages per second through the compressed store's write
and read paths, beside a bare loop of the same codec (python-lz4 or
zstandard, over the same C libraries) on the same pages.

The store is driven as a queue thread drives it: batches of 64 requests of
one page each through the queue server (trueno_ublk.stores.direct), each
write batch first copied into the tag buffers as the kernel copies it. The
bare loop makes one call from Python per page. So the ratio column (store
time / bare codec time) is the whole serving path's cost against the codec
alone: dispatch, same-fill check, allocation, map, locks, copies.
Same-filled pages never reach the codec in the store: their ratio is low.
"""
import argparse
import os
import random

import lz4.block
import zstandard

from trueno_ublk.base.codecs import codec_for
from trueno_ublk.base.units import PAGE_SIZE
from trueno_ublk.benchmark.codecs import best_seconds
from trueno_ublk.stores import open_store
from trueno_ublk.stores.direct import DirectClient

BATCH = 64


def make_pages(kind: str, count: int) -> list[bytes]:
    rng = random.Random(1)
    words = [w.encode() for w in "the quick brown fox jumps over lazy dog page swap memory".split()]
    pages = []
    for _ in range(count):
        if kind == "zero":
            page = bytes(PAGE_SIZE)
        elif kind == "same-fill":
            page = rng.getrandbits(64).to_bytes(8, "little") * (PAGE_SIZE // 8)
        elif kind == "text":
            page = b" ".join(rng.choice(words) for _ in range(900))[:PAGE_SIZE]
        elif kind == "50%-compressible":
            page = rng.randbytes(PAGE_SIZE // 2) + bytes(PAGE_SIZE // 2)
        else:
            page = rng.randbytes(PAGE_SIZE)
        pages.append(page)
    return pages


def bare_codec(name: str):
    """(compress, decompress) of page -> payload, payload -> page; compress
    gives None where the store would keep the page raw."""
    if name.startswith("lz4"):
        mode = "high_compression" if name == "lz4hc" else "default"
        return (lambda page: lz4.block.compress(page, mode=mode, store_size=False),
                lambda payload: lz4.block.decompress(payload, uncompressed_size=PAGE_SIZE))
    if name.startswith("zstd"):
        level = int(name[5:] or 1)
        c = zstandard.ZstdCompressor(level=level, write_content_size=False, write_checksum=False)
        d = zstandard.ZstdDecompressor()
        return c.compress, lambda payload: d.decompress(payload, max_output_size=PAGE_SIZE)
    return (lambda page: None), None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=8192)
    ap.add_argument("--algorithm", default="lz4")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    codec = codec_for(args.algorithm)
    n = args.pages
    print(f"store benchmark: {n} pages of 4 KiB, {codec.name}, best of {args.runs} "
          f"(pid {os.getpid()}, single thread, batches of {BATCH})")
    print(f"{'data':<18}{'path':<7}{'store pages/s':>15}{'bare codec pages/s':>20}{'ratio':>8}")
    for kind in ("zero", "same-fill", "text", "50%-compressible", "random"):
        pages = make_pages(kind, n)
        views = [memoryview(bytearray(p)) for p in pages]
        store = open_store("page", n * PAGE_SIZE, codec)
        client = DirectClient(store, depth=BATCH, buf_size=PAGE_SIZE, helper=False)
        batches = [(b"".join(pages[first:first + BATCH]),
                    [("write", i * PAGE_SIZE, PAGE_SIZE) for i in range(first, min(first + BATCH, n))])
                   for first in range(0, n, BATCH)]
        reads = [[("read", off, length) for _, off, length in requests] for _, requests in batches]

        def store_write():
            for blob, requests in batches:
                client.buffers[:len(blob)] = blob
                client.serve(requests)

        def store_read():
            for requests in reads:
                client.serve(requests)

        out = memoryview(bytearray(PAGE_SIZE))

        compress, decompress = bare_codec(codec.name)
        payloads = [compress(p) for p in pages]

        def bare_write():
            for v in views:
                compress(v)

        def bare_read():
            for p in payloads:
                if p is not None:
                    out[:] = decompress(p)

        for path, store_fn, bare_fn in (("write", store_write, bare_write),
                                        ("read", store_read, bare_read)):
            t_store, t_bare = best_seconds(store_fn, args.runs), best_seconds(bare_fn, args.runs)
            assert client.counts.failed_writes == client.counts.failed_reads == 0
            print(f"{kind:<18}{path:<7}{n / t_store:>15,.0f}{n / t_bare:>20,.0f}"
                  f"{t_store / t_bare:>8.2f}")
        store.close()


if __name__ == "__main__":
    main()
