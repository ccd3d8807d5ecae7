"""scripts/bench store: pages per second through the compressed store's write
and read paths, beside a bare loop of the same codec calls on the same pages.

The ratio column is store time / bare codec time per page: the store's own
overhead (same-fill check, allocation, map, locks, copies). Same-filled pages
never reach the codec in the store, so their ratio is below 1.
"""
import argparse
import os
import random
import time

from trueno_ublk.codecs import codec_for
from trueno_ublk.stores.ram import CompressedRamStore
from trueno_ublk.units import PAGE_SIZE


def make_pages(kind: str, count: int) -> list[bytes]:
    rng = random.Random(1)
    words = [w.encode() for w in "the quick brown fox jumps over lazy dog page swap memory".split()]
    pages = []
    for i in range(count):
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


def best_of(runs: int, fn) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=8192)
    ap.add_argument("--algorithm", default="lz4")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    codec = codec_for(args.algorithm)
    n = args.pages
    print(f"store benchmark: {n} pages of 4 KiB, {codec.name}, best of {args.runs} "
          f"(pid {os.getpid()}, single thread)")
    print(f"{'data':<18}{'path':<7}{'store pages/s':>15}{'bare codec pages/s':>20}{'ratio':>8}")
    for kind in ("zero", "same-fill", "text", "50%-compressible", "random"):
        pages = make_pages(kind, n)
        views = [memoryview(bytearray(p)) for p in pages]
        store = CompressedRamStore(n * PAGE_SIZE, codec)

        def store_write():
            for i, v in enumerate(views):
                store.write(i * PAGE_SIZE, v)

        out = memoryview(bytearray(PAGE_SIZE))

        def store_read():
            for i in range(n):
                store.read(i * PAGE_SIZE, out)

        payloads = [codec.compress(p) for p in pages]

        def bare_write():
            for v in views:
                codec.compress(v)

        def bare_read():
            for p in payloads:
                if p is not None:
                    out[:] = codec.decompress(p, PAGE_SIZE)

        for path, store_fn, bare_fn in (("write", store_write, bare_write),
                                        ("read", store_read, bare_read)):
            t_store, t_bare = best_of(args.runs, store_fn), best_of(args.runs, bare_fn)
            print(f"{kind:<18}{path:<7}{n / t_store:>15,.0f}{n / t_bare:>20,.0f}"
                  f"{t_store / t_bare:>8.2f}")
        store.arena.close()


if __name__ == "__main__":
    main()
