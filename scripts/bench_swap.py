"""scripts/bench swap: kernel zram and trueno-ublk as a machine's only swap,
the same workloads in the same boot.

  churn    tests/integration/swap_workload.py: twice the machine's RAM,
           written, then read back and verified twice
  program  scripts/program_workload.py: Python parsing and walking syntax
           trees of the machine's own sources, in a memory cgroup

Per device and vm.page-cluster: completed or killed, wall time, swap in use
at its peak (/proc/swaps), the device's mem_used_max, and at the end the
data the device holds against what swap has in use (the slots swap freed but
never discarded). Writes bench-results/swap.json. Needs root, ublk_drv, zram
and a small machine (scripts/bench boots a guest of 640 MiB).
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from trueno_ublk.devices import admin

from benchlib import TOP, MiB, Trueno, Zram, sh

WORKLOADS = {
    "churn": TOP / "tests/integration/swap_workload.py",
    "program": TOP / "scripts/program_workload.py",
}
CGROUP = Path("/sys/fs/cgroup/trueno-bench")
# After the workload exits: for swap's discards of freed clusters to arrive
# and for a compactor to act on them, before the "end" figures.
SETTLE_SECONDS = 5


def mem_total() -> int:
    return int(Path("/proc/meminfo").read_text().split()[1]) * 1024


def swap_cached() -> int:
    """Bytes of pages both in RAM and in swap (/proc/meminfo SwapCached)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("SwapCached:"):
            return int(line.split()[1]) * 1024
    return 0


def swap_used(path: str) -> int:
    """Bytes of swap in use on `path` (its line of /proc/swaps)."""
    real = os.path.realpath(path)
    for line in Path("/proc/swaps").read_text().splitlines()[1:]:
        fields = line.split()
        if os.path.realpath(fields[0]) == real:
            return int(fields[3]) * 1024
    return 0


class ZramTarget(Zram):
    name = "kernel zram"

    def mm(self) -> dict:
        f = self.mm_stat()
        return {"orig_data_size": f[0], "compr_data_size": f[1], "mem_used_total": f[2],
                "mem_used_max": f[4], "pages_compacted": f[6],
                "mem_map": 0}               # its table is kept outside mm_stat


class TruenoTarget(Trueno):
    name = "trueno-ublk"

    def mm(self) -> dict:
        return admin.request(int(self.path.removeprefix("/dev/ublkb")), "stat")["mm_stat"]


def cgroup_for(limit: str | None):
    """A preexec function putting the workload in a memory cgroup of `limit`."""
    if not limit:
        return None
    if not Path("/sys/fs/cgroup/cgroup.controllers").exists():
        sh("mount -t cgroup2 none /sys/fs/cgroup")
    Path("/sys/fs/cgroup/cgroup.subtree_control").write_text("+memory")
    CGROUP.mkdir(exist_ok=True)
    (CGROUP / "memory.max").write_text(limit)
    return lambda: (CGROUP / "cgroup.procs").write_text(str(os.getpid()))


def run(target, workload: list[str], cgroup: str | None) -> dict:
    """The workload with `target` as the only swap: its outcome and figures."""
    sh(f"swapoff -a; mkswap {target.path} && swapon --discard {target.path}")
    sh("sync; echo 3 > /proc/sys/vm/drop_caches")
    peak = {"swap_used": 0, "mem_used": 0}
    done = threading.Event()

    def sample():
        while not done.wait(0.5):
            used, mm = swap_used(target.path), target.mm()
            peak["swap_used"] = max(peak["swap_used"], used)
            if mm["mem_used_total"] > peak["mem_used"]:
                # What the device held at its peak beyond the data swap had in it.
                peak.update(mem_used=mm["mem_used_total"], stale=mm["orig_data_size"] - used,
                            unused=mm["mem_used_total"] - mm["compr_data_size"],
                            swap_cached=swap_cached())

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.monotonic()
    proc = subprocess.run([sys.executable, *workload], capture_output=True, text=True,
                          preexec_fn=cgroup_for(cgroup))
    seconds = time.monotonic() - started
    done.set()
    sampler.join()
    time.sleep(SETTLE_SECONDS)
    mm = target.mm()
    used = swap_used(target.path)
    sh(f"swapoff {target.path}")
    killed = proc.returncode < 0 or "Killed" in proc.stderr
    return {"device": target.name, "outcome": "killed" if killed else
            ("completed" if proc.returncode == 0 else f"failed ({proc.returncode})"),
            "seconds": round(seconds, 1), "output": proc.stdout.strip(),
            "swap_used_peak": peak["swap_used"], "stale_at_peak": peak.get("stale", 0),
            "unused_at_peak": peak.get("unused", 0), "swap_cached_at_peak": peak.get("swap_cached", 0),
            "mem_used_max": mm["mem_used_max"],
            "orig_data_size_end": mm["orig_data_size"], "swap_used_end": used,
            "compr_data_size_end": mm["compr_data_size"], "mem_used_total_end": mm["mem_used_total"],
            "pages_compacted": mm["pages_compacted"], "mem_map": mm["mem_map"]}


def summary(results: list[dict]) -> None:
    """Ours against kernel zram, each workload and page-cluster in this boot."""
    print("\nworkload  page-cluster  zram           trueno-ublk    time x zram  peak x zram  "
          "peak less map x zram")
    for r in results:
        if r["device"] != TruenoTarget.name:
            continue
        z = next((z for z in results if z["device"] == ZramTarget.name and
                  (z["workload"], z["page_cluster"]) == (r["workload"], r["page_cluster"])), None)
        if z is None:
            continue
        # zram's mem_used_max leaves out its table (16 bytes a page, kept
        # outside zsmalloc); ours counts its map of the same size.
        less_map = r["mem_used_max"] - r["mem_map"]
        print(f"{r['workload']:9} {r['page_cluster']:>12}  {z['outcome']:13}  {r['outcome']:13} "
              f"{r['seconds'] / z['seconds']:11.2f}  {r['mem_used_max'] / z['mem_used_max']:11.2f}  "
              f"{less_map / z['mem_used_max']:20.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", choices=sorted(WORKLOADS), action="append")
    ap.add_argument("--page-cluster", type=int, action="append",
                    help="vm.page-cluster values to run with (default: 3 and 0)")
    ap.add_argument("--size", default="2G", help="each device's size")
    ap.add_argument("--algorithm", default="lz4")
    ap.add_argument("--program-mib", type=int, default=10, help="sources the program parses")
    ap.add_argument("--cgroup", default="160M", help="the program's memory.max")
    ap.add_argument("--only", choices=("zram", "trueno"), help="one device only")
    args = ap.parse_args()
    workloads = args.workload or ["churn", "program"]
    clusters = args.page_cluster or [3, 0]
    old_cluster = Path("/proc/sys/vm/page-cluster").read_text().strip()
    sh("sysctl -q kernel.hung_task_timeout_secs=30")
    results = []
    print(f"swap benchmark: {args.size} devices, {args.algorithm}, {mem_total() / MiB:.0f} MiB RAM, one boot")
    try:
        for name in workloads:
            if name == "churn":
                command, cgroup = [str(WORKLOADS[name]), str(2 * mem_total() // MiB)], None
            else:
                command, cgroup = [str(WORKLOADS[name]), str(args.program_mib)], args.cgroup
            for cluster in clusters:
                Path("/proc/sys/vm/page-cluster").write_text(str(cluster))
                makers = [lambda: ZramTarget(args.size, args.algorithm),
                          lambda: TruenoTarget(args.size, f"--algorithm {args.algorithm}")]
                if args.only:
                    makers = makers[:1] if args.only == "zram" else makers[1:]
                for make in makers:
                    target = make()
                    try:
                        r = run(target, command, cgroup)
                    finally:
                        target.close()
                    r.update(workload=name, page_cluster=cluster)
                    results.append(r)
                    print(f"  {name:8} page-cluster {cluster}  {r['device']:12} {r['outcome']:9} "
                          f"{r['seconds']:7.1f} s  swap peak {r['swap_used_peak'] / MiB:6.1f} MiB  "
                          f"mem_used_max {r['mem_used_max'] / MiB:6.1f} MiB  end: stored "
                          f"{r['orig_data_size_end'] / MiB:6.1f} MiB for swap's "
                          f"{r['swap_used_end'] / MiB:6.1f} MiB, mem_used_total "
                          f"{r['mem_used_total_end'] / MiB:6.1f} MiB for compr "
                          f"{r['compr_data_size_end'] / MiB:6.1f} MiB; at the peak: stale "
                          f"{r['stale_at_peak'] / MiB:6.1f} MiB, unused {r['unused_at_peak'] / MiB:6.1f} MiB, "
                          f"SwapCached {r['swap_cached_at_peak'] / MiB:6.1f} MiB",
                          flush=True)
    finally:
        Path("/proc/sys/vm/page-cluster").write_text(old_cluster)
    summary(results)
    out = TOP / "bench-results/swap.json"
    out.write_text(json.dumps({"mem_total": mem_total(), "kernel": os.uname().release,
                               "results": results}, indent=1) + "\n")
    print(f"  written to {out.relative_to(TOP)}")


if __name__ == "__main__":
    main()
