"""scripts/bench device: `trueno-ublk benchmark`'s fio matrix over the
configurations developers compare (queues, threads, command batching, the
null store), against kernel zram, in one boot.

The measuring is trueno_ublk.benchmark.device's; this script only names the
targets. Every figure is also a ratio to kernel zram with the same codec in
the same boot (lz4, or zstd for the zstd rows): under emulation only ratios
mean anything. Prints the table and writes the JSON and HTML reports, and
the speed chart as SVG, per kernel series (bench-results/device-6.12.json,
.html, .svg; device-7.3.*).
"""
import argparse
import sys
from pathlib import Path

from trueno_ublk.base.units import parse_size
from trueno_ublk.benchmark import device, html_report

from benchlib import TOP

# name: create's options (trueno) or the algorithm (zram)
TRUENO = {
    "trueno lz4 q1": "--algorithm lz4 --queues 1",   # batched commands on 7.0+
    "trueno lz4 q1 per-tag": "--algorithm lz4 --queues 1 --io-commands per-tag",
    "trueno lz4 q2": "--algorithm lz4 --queues 2",
    "trueno lz4 q1 t2": "--algorithm lz4 --queues 1 --queue-threads 2",   # 6.16+
    "trueno zstd q1": "--algorithm zstd --queues 1",
    "trueno zstd q2": "--algorithm zstd --queues 2",
    "trueno null q1": "--store null --queues 1",
    "trueno null q1 per-tag": "--store null --queues 1 --io-commands per-tag",
    "trueno null q2": "--store null --queues 2",
}
ZRAM = {"zram lz4": "lz4", "zram zstd": "zstd"}


def baseline(name: str) -> str:
    """The kernel zram a target is compared with: the same codec."""
    return "zram zstd" if "zstd" in name else "zram lz4"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="256M")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--runtime", type=int, default=4, help="seconds per fio run")
    ap.add_argument("--out", default=str(TOP / "bench-results"),
                    help="directory for the reports (in a guest, one under the checkout: the rest is read-only)")
    ap.add_argument("--targets", metavar="NAMES",
                    help="comma-separated subset of: " + ", ".join(TRUENO) + " (zram is always run)")
    args = ap.parse_args()
    wanted = set(TRUENO)
    if args.targets:
        wanted = {t.strip() for t in args.targets.split(",")}
        if wanted - set(TRUENO):
            ap.error(f"unknown target(s): {', '.join(sorted(wanted - set(TRUENO)))}")
    zram = {baseline(t) for t in wanted}
    targets = ([device.Target(name, "zram", algorithm) for name, algorithm in ZRAM.items() if name in zram]
               + [device.Target(name, "trueno", options, baseline(name))
                  for name, options in TRUENO.items() if name in wanted])
    runs = len(targets) * len(device.WORKLOADS) * args.runs
    done = []

    def progress(target: str, workload: str) -> None:
        done.append(1)
        print(f"\r[{len(done)}/{runs}] {target}: {workload}".ljust(70), end="", file=sys.stderr)

    # The data of every earlier figure: fio's buffers, half of each compressible.
    doc = device.run(targets, device.fio_data(50), parse_size(args.size), args.runtime, args.runs,
                     progress=progress)
    print(file=sys.stderr)
    print(device.render_text(doc))
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    stem = out / f"device-{'.'.join(doc['host']['kernel'].split('.')[:2])}"      # one per kernel series
    for suffix, text in ((".json", device.to_json(doc)), (".html", html_report.render(doc)),
                         (".svg", html_report.ratio_chart(doc))):
        Path(f"{stem}{suffix}").write_text(text)
    print(f"wrote {stem}.json, .html and .svg", file=sys.stderr)


if __name__ == "__main__":
    main()
