"""scripts/bench profile: where a queue thread's time goes, per workload.

Samples the I/O worker with py-spy (native frames included, idle included)
while fio runs, then sorts every sample of the queue threads by the
deepest frame it recognises:
  kernel round trip  queue_ring_run: commit, submit, wait in io_uring_enter
  codec              LZ4_* / ZSTD_* inside the page store
  store mechanics    the rest of ps_read/ps_write/ps_discard: same-fill check,
                     map, slots, copies
  dispatch           the queue server around them (queue_server_*): the request
                     loop, the helper hand-off
  python + cffi      anything else (the queue loop itself runs wholly in C)
"""
import argparse
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from benchlib import HALF_COMPRESSIBLE, Trueno, fio

PYSPY = str(Path(sys.executable).with_name("py-spy"))
WORKLOADS = {
    "randread 4k qd64": "--rw=randread --bs=4k --iodepth=64",
    "randwrite 4k qd64": "--rw=randwrite --bs=4k --iodepth=64",
    "seqread 1M qd16": "--rw=read --bs=1M --iodepth=16",
    "seqwrite 1M qd16": "--rw=write --bs=1M --iodepth=16",
}
CATEGORIES = ("kernel round trip", "codec", "store mechanics", "dispatch", "python + cffi")


def category(stack: str) -> str:
    if "queue_ring_run" in stack:
        return "kernel round trip"
    if "LZ4_" in stack or "ZSTD_" in stack:
        return "codec"
    if any(f in stack for f in ("ps_read", "ps_write", "ps_discard")):
        return "store mechanics"
    if "queue_server_" in stack:
        return "dispatch"
    return "python + cffi"


def profile(worker: int, dev: str, size: str, workload: str, seconds: int) -> Counter:
    out = Path(f"/tmp/profile-{worker}.txt")
    spy = subprocess.Popen([PYSPY, "record", "--native", "--idle", "--threads",
                            "--pid", str(worker), "--duration", str(seconds), "--rate", "40",
                            "--format", "raw", "--output", str(out)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    fio(dev, f"--size={size} --time_based --runtime={seconds} {HALF_COMPRESSIBLE} {workload}")
    spy.wait(timeout=120)
    counts = Counter()
    for line in out.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if "ublk-q" in stack.split(";")[0]:
            counts[category(stack)] += int(n)
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="128M")
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--algorithm", default="lz4")
    args = ap.parse_args()
    device = Trueno(args.size, f"--algorithm {args.algorithm}")
    dev = device.path
    try:
        fio(dev, f"--bs=1M --iodepth=16 --rw=write --size={args.size} {HALF_COMPRESSIBLE}")
        worker = device.worker_pid()
        print(f"queue-thread time by category ({args.algorithm}, 1 queue, py-spy --native --idle)")
        print(f"{'workload':<20}" + "".join(f"{c:>19}" for c in CATEGORIES) + f"{'samples':>9}")
        for name, workload in WORKLOADS.items():
            counts = profile(worker, dev, args.size, workload, args.seconds)
            total = sum(counts.values()) or 1
            print(f"{name:<20}" + "".join(f"{100 * counts[c] / total:>18.1f}%" for c in CATEGORIES)
                  + f"{total:>9}", flush=True)
    finally:
        device.close()


if __name__ == "__main__":
    main()
