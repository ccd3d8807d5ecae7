"""scripts/bench memory: the daemon's real memory cost beside kernel zram's.

The same data (fio, 50%-compressible, fixed seed) goes to a kernel zram
device and to a trueno-ublk device of the same size and algorithm, in the
same boot. Compared: zram's mem_used_total against the daemon's resident
memory growth; then the daemon's memory after discarding it all and after
`compact`. Needs root, ublk_drv and zram.
"""
import argparse
import time

import psutil

from benchlib import CLI, HALF_COMPRESSIBLE, MiB, Trueno, Zram, fio, sh


def fill(dev: str, size: str) -> None:
    fio(dev, f"--rw=write --bs=64k --iodepth=16 --size={size} {HALF_COMPRESSIBLE} --randseed=42")


def zram_mem_used(size: str, algorithm: str) -> tuple[int, int]:
    zram = Zram(size, algorithm)
    try:
        fill(zram.path, size)
        mm = zram.mm_stat()
        return mm[2], mm[1]
    finally:
        zram.close()


def daemon_rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1G")
    ap.add_argument("--algorithm", default="lz4")
    args = ap.parse_args()
    zram_total, zram_compr = zram_mem_used(args.size, args.algorithm)
    dev = Trueno(args.size, f"--algorithm {args.algorithm}")
    try:
        pid = dev.worker_pid()
        time.sleep(1)
        empty = daemon_rss(pid)
        fill(dev.path, args.size)
        full = daemon_rss(pid)
        stat = dev.stat()
        sh(f"blkdiscard {dev.path}")
        discarded = daemon_rss(pid)
        sh(f"{CLI} compact {dev.path}")
        compacted = daemon_rss(pid)
    finally:
        dev.close()

    growth = full - empty
    print(f"memory benchmark: {args.size} of 50%-compressible data, {args.algorithm}, one boot")
    print(f"  kernel zram   mem_used_total {zram_total / MiB:9.1f} MiB  (compr_data_size {zram_compr / MiB:.1f} MiB)")
    print(f"  trueno-ublk   RSS growth     {growth / MiB:9.1f} MiB  = {growth / zram_total:.3f}x zram (goal <= 1.10x)")
    total = stat["mem_used_total"]
    print(f"                mem_used_total {total / MiB:9.1f} MiB  = {total / growth:.3f}x its RSS growth"
          f"  (compr_data_size {stat['compr_data_size'] / MiB:.1f} MiB)")
    print(f"  RSS empty {empty / MiB:.1f} MiB, full {full / MiB:.1f} MiB, after discard "
          f"{discarded / MiB:.1f} MiB, after compact {compacted / MiB:.1f} MiB "
          f"(goal: within 10% of empty + map)")


if __name__ == "__main__":
    main()
