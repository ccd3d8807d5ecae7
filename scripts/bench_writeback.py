"""scripts/bench writeback: how large the writes to a backing device should
be, and how close the store's writeback and its reads from the device come
to the device itself.

1. The device alone: --size of direct writes of k pages each (k from 1 to
   256), as a writeback of batches of k pages issues them. MiB/s, and
   against k = 1, the one-page writes of kernel zram before it batched.
2. The store: --size of incompressible pages written to a page store backed
   by the device, then written back (`writeback huge`), then read back in
   128 KiB requests (neighbouring pages of a group in one read) and in 4 KiB
   requests at random offsets. Its writes come in batches of
   PS_WRITEBACK_BATCH pages (native/page_store/page_store.h).
3. Kernel zram with the same device as backing_dev (a block device only,
   where zram has CONFIG_ZRAM_WRITEBACK): the same pages, `huge` written
   back, at each writeback_batch_size (bios in flight) where the kernel has
   that knob, then read back as above.

Figures are the best of --repeats. Under emulation (scripts/vm) absolute
figures mean nothing: read the columns against each other.
"""
import argparse
import mmap
import os
import random
import stat
import subprocess
import time
from pathlib import Path

from trueno_ublk._native import lib
from trueno_ublk.base.codecs import codec_for
from trueno_ublk.base.units import PAGE_SIZE, parse_size
from trueno_ublk.benchmark.codecs import best_seconds
from trueno_ublk.benchmark.targets import Zram
from trueno_ublk.stores import open_store
from trueno_ublk.stores.backing import open_backing
from trueno_ublk.stores.direct import DirectClient
from trueno_ublk.stores.policy import Policy

MiB = 1 << 20
RUN_PAGES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
REQUEST = 128 << 10
SCRATCH = Path(__file__).resolve().parent.parent / "bench-results" / "scratch" / "writeback-target"


def target_path(arg: str | None, size: int) -> str:
    """The device to write to: --target, the guest's empty disk, or a file
    here written whole (so that writes land in place)."""
    path = arg or os.environ.get("TRUENO_UBLK_DISK")
    if path:
        return path
    SCRATCH.parent.mkdir(parents=True, exist_ok=True)
    if not SCRATCH.exists() or SCRATCH.stat().st_size < size:
        subprocess.run(["dd", "if=/dev/zero", f"of={SCRATCH}", "bs=1M", f"count={size // MiB}", "conv=fsync",
                        "status=none"], check=True)
    return str(SCRATCH)


def raw_writes(path: str, size: int, repeats: int) -> dict[int, float]:
    """MiB/s of direct writes of k pages, for each k."""
    fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    buf = mmap.mmap(-1, RUN_PAGES[-1] * PAGE_SIZE)
    buf.write(os.urandom(len(buf)))
    try:
        def write_all(k):
            view = memoryview(buf)[:k * PAGE_SIZE]
            for offset in range(0, size, k * PAGE_SIZE):
                os.pwrite(fd, view, offset)
        return {k: size / MiB / best_seconds(lambda k=k: write_all(k), repeats) for k in RUN_PAGES}
    finally:
        os.close(fd)


def read_rates(read, size: int, repeats: int) -> tuple[float, float]:
    """(MiB/s of sequential 128 KiB reads, 4 KiB reads a second at random
    offsets) through read(offset, length)."""
    offsets = random.Random(1).sample(range(size // PAGE_SIZE), min(4096, size // PAGE_SIZE))
    sequential = best_seconds(lambda: [read(o, REQUEST) for o in range(0, size, REQUEST)], repeats)
    scattered = best_seconds(lambda: [read(o * PAGE_SIZE, PAGE_SIZE) for o in offsets], repeats)
    return size / MiB / sequential, len(offsets) / scattered


def store_rates(path: str, data: bytes, repeats: int) -> tuple[float, float, float]:
    """(writeback MiB/s, sequential read MiB/s, random 4K reads/s) of a ram
    store backed by `path`."""
    best, rates = float("inf"), None
    # The background's policy off (pages routed raw by entropy are written
    # back by it at once): the timed writeback moves every page.
    policy = Policy(recompress_after=0, entropy_threshold=0, writeback_after=0)
    for _ in range(repeats):
        fd, size = open_backing(path)
        store = open_store("page", len(data), codec_for("lz4"), policy=policy)
        try:
            store.set_backing(fd, size)
            client = DirectClient(store)
            for offset in range(0, len(data), REQUEST):
                client.write(offset, data[offset:offset + REQUEST])
            start = time.perf_counter()
            moved = store.writeback("huge", len(data) // PAGE_SIZE)
            best = min(best, time.perf_counter() - start)
            assert moved == len(data) // PAGE_SIZE, f"wrote back {moved} pages"
            rates = rates or read_rates(lambda o, n: client.serve([("read", o, n)]), len(data), repeats)
            assert b"".join(client.read(o, REQUEST) for o in range(0, len(data), REQUEST)) == data
        finally:
            store.close()
            os.close(fd)
    return (len(data) / MiB / best, *rates)


def zram_rates(path: str, data: bytes, repeats: int) -> dict[str, tuple[float, float, float]]:
    """{row name: (writeback MiB/s, sequential read MiB/s, random 4K
    reads/s)} of kernel zram at each writeback_batch_size, its default
    first; {} where kernel zram cannot write back to `path`."""
    if not stat.S_ISBLK(os.stat(path).st_mode):
        return {}
    try:
        probe = Zram(len(data), backing=path)
    except (OSError, subprocess.CalledProcessError):        # no zram, or no CONFIG_ZRAM_WRITEBACK
        return {}
    knob = probe.sysfs / "writeback_batch_size"
    default = int(knob.read_text()) if knob.exists() else None
    probe.close()
    rows = {}
    for batch in [default, *(b for b in (1, 128) if default and b != default)]:
        best, reads = float("inf"), None
        for _ in range(repeats):
            zram = Zram(len(data), backing=path)
            try:
                if batch:
                    (zram.sysfs / knob.name).write_text(str(batch))
                with open(zram.path, "r+b", buffering=0) as f:
                    f.write(data)
                    os.fsync(f.fileno())
                start = time.perf_counter()
                zram.writeback("huge")
                best = min(best, time.perf_counter() - start)
                written = zram.bd_stat()[2]
                assert written == len(data) // PAGE_SIZE, f"zram wrote back {written} pages"
                reads = reads or direct_read_rates(zram.path, len(data), repeats)
            finally:
                zram.close()
        name = f"{batch} in flight" + (" (default)" if batch == default else "") if batch else "one page at a time"
        rows[f"zram, {name}"] = (len(data) / MiB / best, *reads)
    return rows


def direct_read_rates(path: str, size: int, repeats: int) -> tuple[float, float]:
    """read_rates of block device `path` through direct reads."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, REQUEST)
    try:
        return read_rates(lambda o, n: os.preadv(fd, [memoryview(buf)[:n]], o), size, repeats)
    finally:
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="64M", type=parse_size, help="bytes written back (default 64M)")
    parser.add_argument("--target", help="block device or file to write to (default: the guest's "
                                         "disk, or a file in bench-results/scratch)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    size = args.size // REQUEST * REQUEST
    if size == 0:
        parser.error(f"--size: at least {REQUEST // 1024}K")
    path = target_path(args.target, size)
    if not os.path.exists(path) or os.path.getsize(path) < size and not stat.S_ISBLK(os.stat(path).st_mode):
        parser.error(f"--target {path}: no such file, or smaller than --size")
    print(f"target {path}, {size // MiB} MiB, best of {args.repeats}; kernel {os.uname().release}")

    raw = raw_writes(path, size, args.repeats)
    print("\n1. the device alone: direct writes of k pages")
    print(f"{'k pages':>8} {'MiB/s':>8} {'x k=1':>6}")
    for k, rate in raw.items():
        print(f"{k:>8} {rate:8.1f} {rate / raw[1]:6.2f}")

    data = os.urandom(size)
    print(f"\n2.-3. writeback of {size // MiB} MiB of incompressible pages, then read back; x zram: "
          "against kernel zram at its default")
    rows = {f"trueno, batches of {lib.PS_WRITEBACK_BATCH}": store_rates(path, data, args.repeats)}
    zram = zram_rates(path, data, args.repeats)
    if not zram:
        print("(kernel zram cannot write back to this target: not a block device, or no CONFIG_ZRAM_WRITEBACK)")
    rows.update(zram)
    base = next(iter(zram.values()), None)
    print(f"{'target':<34} {'write MiB/s':>11} {'x zram':>6} {'seq rd MiB/s':>12} {'x zram':>6} "
          f"{'4K rd/s':>8} {'x zram':>6}")
    for name, rates in rows.items():
        cells = [f"{rate:{width}.{digits}f} " + (f"{rate / zram_rate:6.2f}" if base else f"{'-':>6}")
                 for rate, zram_rate, width, digits in zip(rates, base or rates, (11, 12, 8), (1, 1, 0), strict=True)]
        print(f"{name:<34} " + " ".join(cells))


if __name__ == "__main__":
    main()
