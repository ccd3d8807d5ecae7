"""scripts/bench ab REV: this checkout's page store against the one at git
revision REV, in one boot: is a change slower on the hot path?

Each round makes a device with each build's own CLI (REV's is built in
bench-results/scratch/ab-REV by scripts/bench), runs fio on it -- random 4K
writes and reads, sequential 1M writes and reads, half-compressible data --
and deletes it; builds alternate, so that drifts of the emulated machine
hit both. Prints each build's mean IOPS and the ratio of this checkout's
to REV's. Needs root and ublk_drv.
"""
import argparse
import statistics
from pathlib import Path

from benchlib import HALF_COMPRESSIBLE, TOP, fio, sh

WORKLOADS = {
    "rand write 4K": "--rw=randwrite --bs=4k --iodepth=32",
    "rand read 4K": "--rw=randread --bs=4k --iodepth=32",
    "seq write 1M": "--rw=write --bs=1M --iodepth=8",
    "seq read 1M": "--rw=read --bs=1M --iodepth=8",
}


def run_build(checkout: Path, runtime: int) -> dict[str, float]:
    cli = checkout / ".venv" / "bin" / "trueno-ublk"
    dev = sh(f"{cli} create --size 1G").strip()
    try:
        iops = {}
        for name, options in WORKLOADS.items():
            job = fio(dev, f"{options} --size=256M --time_based --runtime={runtime} {HALF_COMPRESSIBLE}")
            iops[name] = job["read"]["iops"] + job["write"]["iops"]
        return iops
    finally:
        sh(f"{cli} delete {dev}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path, help="the other build's checkout (made by scripts/bench ab REV)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runtime", type=int, default=10, help="seconds per fio run")
    args = ap.parse_args()
    builds = {"this checkout": TOP, "old": args.old}
    results = {name: {w: [] for w in WORKLOADS} for name in builds}
    for _ in range(args.rounds):
        for name, checkout in builds.items():
            for workload, iops in run_build(checkout, args.runtime).items():
                results[name][workload].append(iops)
    print(f"A/B: this checkout against {args.old.name}, kernel {sh('uname -r').strip()}, "
          f"mean IOPS of {args.rounds} alternating rounds, {args.runtime} s each")
    print(f"{'workload':<16}{'old':>10}{'new':>10}{'new/old':>9}")
    for workload in WORKLOADS:
        old = statistics.mean(results["old"][workload])
        new = statistics.mean(results["this checkout"][workload])
        print(f"{workload:<16}{old:>10.0f}{new:>10.0f}{new / old:>9.2f}")


if __name__ == "__main__":
    main()
