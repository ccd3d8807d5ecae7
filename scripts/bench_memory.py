"""scripts/bench memory: the daemon's real memory cost beside kernel zram's.

The same data (fio, 50%-compressible, fixed seed) goes to a kernel zram
device and to a trueno-ublk device of the same size and algorithm, in the
same boot. Compared: zram's mem_used_total against the daemon's resident
memory growth; then the daemon's memory after discarding it all and after
`compact`. Needs root, ublk_drv and zram.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import psutil

CLI = str(Path(sys.executable).with_name("trueno-ublk"))
MiB = 1 << 20


def sh(cmd: str) -> str:
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True).stdout


def fill(dev: str, size: str) -> None:
    sh(f"fio --name=fill --filename={dev} --ioengine=io_uring --direct=1 --rw=write --bs=64k "
       f"--iodepth=16 --size={size} --buffer_compress_percentage=50 --refill_buffers "
       f"--randseed=42 --output-format=terse")


def zram_mem_used(size: str, algorithm: str) -> tuple[int, int]:
    dev_id = int(Path("/sys/class/zram-control/hot_add").read_text())
    sysfs = Path(f"/sys/block/zram{dev_id}")
    (sysfs / "comp_algorithm").write_text(algorithm)
    (sysfs / "disksize").write_text(size)
    try:
        fill(f"/dev/zram{dev_id}", size)
        mm = (sysfs / "mm_stat").read_text().split()
        return int(mm[2]), int(mm[1])
    finally:
        (sysfs / "reset").write_text("1")
        Path("/sys/class/zram-control/hot_remove").write_text(str(dev_id))


def daemon_rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1G")
    ap.add_argument("--algorithm", default="lz4")
    args = ap.parse_args()
    sh("modprobe zram num_devices=0")

    zram_total, zram_compr = zram_mem_used(args.size, args.algorithm)
    dev = sh(f"{CLI} create --size {args.size} --algorithm {args.algorithm}").strip()
    try:
        devices = json.loads(sh(f"{CLI} list --json -o NAME,WORKER"))["devices"]
        pid = next(d["worker"] for d in devices if d["name"] == dev)
        time.sleep(1)
        empty = daemon_rss(pid)
        fill(dev, args.size)
        full = daemon_rss(pid)
        stat = json.loads(sh(f"{CLI} stat --json {dev}"))
        sh(f"blkdiscard {dev}")
        discarded = daemon_rss(pid)
        sh(f"{CLI} compact {dev}")
        compacted = daemon_rss(pid)
    finally:
        sh(f"{CLI} delete {dev}")

    growth = full - empty
    print(f"memory benchmark: {args.size} of 50%-compressible data, {args.algorithm}, one boot")
    print(f"  kernel zram   mem_used_total {zram_total / MiB:9.1f} MiB  (compr_data_size {zram_compr / MiB:.1f} MiB)")
    print(f"  trueno-ublk   RSS growth     {growth / MiB:9.1f} MiB  = {growth / zram_total:.3f}x zram (goal <= 1.10x)")
    print(f"                mem_used_total {stat['mem_used_total'] / MiB:9.1f} MiB  = {stat['mem_used_total'] / growth:.3f}x its RSS growth"
          f"  (compr_data_size {stat['compr_data_size'] / MiB:.1f} MiB)")
    print(f"  RSS empty {empty / MiB:.1f} MiB, full {full / MiB:.1f} MiB, after discard "
          f"{discarded / MiB:.1f} MiB, after compact {compacted / MiB:.1f} MiB "
          f"(goal: within 10% of empty + map)")


if __name__ == "__main__":
    main()
