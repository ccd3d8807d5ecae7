"""scripts/bench device: the same fio matrix against kernel zram and trueno-ublk.

Everything runs in one boot (the guest, or natively where the kernel has
ublk), and every figure is reported as a ratio to kernel zram measured in
that same boot: under emulation only ratios mean anything. Each cell is the
median of --runs fio runs; zstd rows are compared with kernel zram zstd. Writes
a table to stdout, and JSON and a PNG chart per kernel series
(bench-results/device-6.12.json, device-7.3.json ...).
"""
import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchlib import HALF_COMPRESSIBLE, TOP, MiB, Trueno, Zram, fio, sh

WORKLOADS = {
    "randread 4k qd64": "--rw=randread --bs=4k --iodepth=64",
    "randwrite 4k qd64": "--rw=randwrite --bs=4k --iodepth=64",
    "randrw 70/30 4k qd64": "--rw=randrw --rwmixread=70 --bs=4k --iodepth=64",
    "seqread 1M qd16": "--rw=read --bs=1M --iodepth=16",
    "seqwrite 1M qd16": "--rw=write --bs=1M --iodepth=16",
}
# name: ("zram", algorithm) or ("trueno", create options)
TARGETS = {
    "zram lz4": ("zram", "lz4"),
    "zram zstd": ("zram", "zstd"),
    "trueno lz4 q1": ("trueno", "--algorithm lz4 --queues 1"),   # batched commands on 7.0+
    "trueno lz4 q1 per-tag": ("trueno", "--algorithm lz4 --queues 1 --io-commands per-tag"),
    "trueno lz4 q2": ("trueno", "--algorithm lz4 --queues 2"),
    "trueno lz4 q1 t2": ("trueno", "--algorithm lz4 --queues 1 --queue-threads 2"),   # 6.16+
    "trueno zstd q1": ("trueno", "--algorithm zstd --queues 1"),
    "trueno zstd q2": ("trueno", "--algorithm zstd --queues 2"),
    "trueno null q1": ("trueno", "--store null --queues 1"),
    "trueno null q1 per-tag": ("trueno", "--store null --queues 1 --io-commands per-tag"),
    "trueno null q2": ("trueno", "--store null --queues 2"),
}


def baseline(target: str) -> str:
    """The kernel zram a target is compared with: the same codec."""
    return "zram zstd" if "zstd" in target else "zram lz4"


def measure(dev: str, size: str, workload: str, runtime: int) -> dict:
    job = fio(dev, f"--size={size} --time_based --runtime={runtime} --ramp_time=1 --numjobs=1 "
                   f"{HALF_COMPRESSIBLE} {workload}")
    iops = job["read"]["iops"] + job["write"]["iops"]
    bw = job["read"]["bw_bytes"] + job["write"]["bw_bytes"]
    p99 = max(job[d]["clat_ns"].get("percentile", {}).get("99.000000", 0) for d in ("read", "write"))
    return {"iops": iops, "mib_s": bw / MiB, "p99_us": p99 / 1000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="256M")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--runtime", type=int, default=4, help="seconds per fio run")
    ap.add_argument("--out", default=str(TOP / "bench-results"),
                    help="directory for the JSON and chart (in a guest, one under the checkout: the rest is read-only)")
    ap.add_argument("--targets", metavar="NAMES",
                    help="comma-separated subset of: " + ", ".join(TARGETS) + " (zram is always run)")
    ap.add_argument("--report", action="store_true",
                    help="only draw the chart of the newest run in --out")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    if args.report:
        runs = sorted(out.glob("device-*.json"), key=lambda p: p.stat().st_mtime)
        if not runs:
            sys.exit(f"bench device: no results in {out}")
        report(json.loads(runs[-1].read_text()), runs[-1])
        return

    targets = dict(TARGETS)
    if args.targets:
        wanted = {t.strip() for t in args.targets.split(",")}
        if wanted - set(TARGETS):
            ap.error(f"unknown target(s): {', '.join(sorted(wanted - set(TARGETS)))}")
        wanted |= {baseline(t) for t in wanted}
        targets = {t: o for t, o in TARGETS.items() if t in wanted}
    results: dict[str, dict[str, dict]] = {}
    cells = len(targets) * len(WORKLOADS) * args.runs
    done = 0
    started = time.monotonic()
    for target, (kind, options) in targets.items():
        try:
            dev = Zram(args.size, options) if kind == "zram" else Trueno(args.size, options)
        except subprocess.CalledProcessError as e:      # e.g. a feature this kernel lacks
            print(f"\n{target}: skipped: {e.stderr.strip()}", file=sys.stderr)
            cells -= len(WORKLOADS) * args.runs
            continue
        try:
            # Reads need data: prefill the whole device once.
            fio(dev.path, f"--rw=write --bs=1M --iodepth=16 --size={args.size} {HALF_COMPRESSIBLE}")
            for name, workload in WORKLOADS.items():
                runs = []
                for _ in range(args.runs):
                    runs.append(measure(dev.path, args.size, workload, args.runtime))
                    done += 1
                    print(f"\r[{done}/{cells}] {target}: {name} "
                          f"({time.monotonic() - started:.0f}s)".ljust(70), end="", file=sys.stderr)
                results.setdefault(target, {})[name] = {
                    key: statistics.median(r[key] for r in runs) for key in runs[0]}
        finally:
            dev.close()
    print(file=sys.stderr)

    kernel = sh("uname -r").strip()
    run = {"kernel": kernel, "size": args.size, "runs": args.runs,
           "runtime_s": args.runtime, "results": results}
    print_table(run)
    path = out / f"device-{'.'.join(kernel.split('.')[:2])}.json"      # one file per kernel series
    path.write_text(json.dumps(run, indent=2))
    print(f"wrote {path}", file=sys.stderr)


def report(run: dict, path: Path) -> None:
    """The PNG chart beside the JSON: drawn natively, after the guest run."""
    draw(run["results"], path.with_suffix(".png"), run["kernel"])
    print(f"\nwrote {path.with_suffix('.png')}")


def ratio(results: dict, target: str, workload: str) -> float:
    base = results[baseline(target)][workload]["iops"]
    return results[target][workload]["iops"] / base if base else 0.0


def print_table(run: dict) -> None:
    results = run["results"]
    print(f"device benchmark: kernel {run['kernel']}, {run['size']}, median of {run['runs']} x "
          f"{run['runtime_s']}s, 50%-compressible data; x zram = IOPS / kernel zram's with the "
          f"same codec (lz4; zstd for zstd rows) in the same boot")
    width = max(map(len, results)) + 2
    print(f"{'target':<{width}}{'workload':<22}{'IOPS':>10}{'MiB/s':>9}{'p99 us':>9}{'x zram':>8}")
    for target, cells in results.items():
        for name, cell in cells.items():
            print(f"{target:<{width}}{name:<22}{cell['iops']:>10.0f}{cell['mib_s']:>9.1f}"
                  f"{cell['p99_us']:>9.0f}{ratio(results, target, name):>8.2f}")


def draw(results, path: Path, kernel: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = [t for t in results if TARGETS[t][0] == "trueno"]
    workloads = list(WORKLOADS)
    fig, ax = plt.subplots(figsize=(11, 5))
    width = 0.8 / len(targets)
    for i, target in enumerate(targets):
        ratios = [ratio(results, target, w) for w in workloads]
        ax.bar([x + i * width for x in range(len(workloads))], ratios, width, label=target)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([x + width * (len(targets) - 1) / 2 for x in range(len(workloads))], workloads)
    ax.set_ylabel("IOPS / kernel zram, same codec (same boot)")
    ax.set_title(f"trueno-ublk vs kernel zram, kernel {kernel}, emulated guest: ratios only")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
