"""scripts/bench swap: each set-up in turn a machine's only swap, under the
same real programs, in one boot (issue 32's measure).

Set-ups (--setup, repeatable; default all five, in this order):
  zram-lz4     kernel zram, lz4
  zram-zstd    kernel zram, zstd
  zswap-disk   kernel zswap (lz4, zsmalloc, its pool capped at --mem-limit of
               RAM through max_pool_percent, rounded down) in front of a swap
               partition on the guest's empty disk ($TRUENO_UBLK_DISK)
  trueno       trueno-ublk with its defaults
  trueno-disk  trueno-ublk --mem-limit M --backing-dev (the disk's other half)
The disk set-ups are skipped, with a line saying so, without a disk. The
disk is split in two halves: partitions where sfdisk is installed, else
dm-linear maps (dmsetup).

Programs (--program, repeatable; default program and index), each in a
memory cgroup of --cgroup (churn: of no limit):
  program  scripts/program_workload.py: Python parsing --program-mib MiB
           of the standard library into syntax trees, walked twice
  index    scripts/index_workload.py: SQLite building a table of
           --index-mib MiB in memory, indexing and walking it
  churn    tests/integration/swap_workload.py: twice the machine's RAM,
           written, then read back and verified twice

Per run: outcome (completed, killed: OOM by the cgroup's memory.events, or
a signal; failed), wall time, the device's mem_used_max (zswap: its pool's
peak, sampled), the cgroup's memory.swap.peak, failed writes (the device's
io_stat, and dmesg's swap write errors), pswpin/pswpout and zswap's counters
from /proc/vmstat, the disk's pages read and written, and a profile: the
device's read requests and their mean latency (/sys/block/DEV/stat), the
program's major faults and its user, system and off-CPU time, and
trueno-ublk's daemon threads' CPU time (and its system share), run-queue
wait and voluntary context switches per read request, by thread name; and
at trueno-ublk's peak, what the pages it stores are to swap (sampled): out
of RAM, also in the swap cache, or freed by swap and not yet discarded. Then one
table per program, one of the profiles, and bench-results/swap.json.
Needs root, ublk_drv, zram, zswap and a small machine (scripts/bench
boots a guest of 1 GiB with a disk).
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from trueno_ublk.base import procfs, stats
from trueno_ublk.base.units import parse_size
from trueno_ublk.devices import admin

from benchlib import TOP, MiB, Trueno, Zram, sh

PROGRAMS = {
    "program": TOP / "scripts/program_workload.py",
    "index": TOP / "scripts/index_workload.py",
    "churn": TOP / "tests/integration/swap_workload.py",
}
SETUPS = ("zram-lz4", "zram-zstd", "zswap-disk", "trueno", "trueno-disk")
DISK_SETUPS = ("zswap-disk", "trueno-disk")
CGROUP = Path("/sys/fs/cgroup/trueno-bench")
ZSWAP = Path("/sys/module/zswap/parameters")
ZSWAP_DEBUG = Path("/sys/kernel/debug/zswap")
VMSTAT_KEYS = ("pswpin", "pswpout", "zswpin", "zswpout", "zswpwb")
SWAP_WRITE_ERROR = "Write-error on swap-device"
SAMPLE_SECONDS = 0.5
TICKS = os.sysconf("SC_CLK_TCK")
# Ours, at the end of a run: where its pages went and what moving them cost.
STORE_FIGURES = ("recompressions", "frame_pages", "compr_data_size", "mem_map", "bd_writes", "bd_reads",
                 "background_cpu_seconds", "background_paused")


# --- The machine's figures ---------------------------------------------

def meminfo(key: str) -> int:
    """Bytes of /proc/meminfo's line `key` (0 when the kernel has none)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def vmstat() -> dict:
    """The swap counters of /proc/vmstat this kernel has."""
    fields = dict(line.split() for line in Path("/proc/vmstat").read_text().splitlines())
    return {key: int(fields[key]) for key in VMSTAT_KEYS if key in fields}


def swap_write_errors() -> int:
    return subprocess.run(["dmesg"], capture_output=True, text=True).stdout.count(SWAP_WRITE_ERROR)


def block_stat(path: str) -> dict:
    """Reads and writes completed, sectors read and written, ms reading of
    the block device at `path` (a partition or a dm map too)."""
    name = os.path.basename(os.path.realpath(path))
    f = [int(x) for x in Path(f"/sys/class/block/{name}/stat").read_text().split()]
    return {"reads": f[0], "sectors_read": f[2], "read_ms": f[3], "writes": f[4], "sectors_written": f[6]}


def threads(pids: list[int]) -> dict:
    """Per thread name less its number (ublk-q0, ublk-q1: ublk-q), summed:
    CPU seconds, the system's share of them, seconds waited on a run queue
    for a CPU (schedstat), and voluntary context switches."""
    groups = {}
    for pid in pids:
        for tid, cpu_seconds in procfs.thread_cpu_seconds(pid).items():
            task = Path(f"/proc/{pid}/task/{tid}")
            try:
                status = (task / "status").read_text()
                stat = (task / "stat").read_text()
                schedstat = (task / "schedstat").read_text().split()
            except OSError:                     # the thread ended meanwhile
                continue
            name = re.sub(r"\d+$", "", re.search(r"^Name:\s+(.*)$", status, re.M).group(1))
            switches = int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))
            group = groups.setdefault(name, {"cpu_seconds": 0.0, "system_seconds": 0.0, "runqueue_seconds": 0.0,
                                             "voluntary_switches": 0})
            group["cpu_seconds"] += cpu_seconds
            group["system_seconds"] += int(stat.rsplit(")", 1)[1].split()[12]) / TICKS
            group["runqueue_seconds"] += int(schedstat[1]) / 1e9
            group["voluntary_switches"] += switches
    return groups


def delta(after: dict, before: dict) -> dict:
    """after - before, key by key (nested dicts too; missing before: 0)."""
    return {key: delta(value, before.get(key, {})) if isinstance(value, dict) else
            round(value - before.get(key, 0), 3) for key, value in after.items()}


# --- The disk ----------------------------------------------------------

def split_disk(disk: str) -> list[str]:
    """Two halves of `disk`: its partitions 1 and 2 where sfdisk is
    installed, else two dm-linear maps."""
    sectors = int(Path(f"/sys/class/block/{os.path.basename(disk)}/size").read_text())
    half = sectors // 2 // 2048 * 2048
    if shutil.which("sfdisk"):
        subprocess.run(["sfdisk", "-q", disk], input=f"start=2048,size={half - 2048}\n,\n",
                       text=True, check=True, capture_output=True)
        parts = [f"{disk}1", f"{disk}2"]
        for _ in range(50):             # devtmpfs makes the nodes as the kernel rereads the table
            if all(os.path.exists(p) for p in parts):
                return parts
            time.sleep(0.1)
        raise SystemExit(f"bench swap: sfdisk partitioned {disk} but {parts} did not appear")
    sh("modprobe dm_mod")
    parts = []
    for name, start, length in (("trueno-swap", 0, half), ("trueno-backing", half, sectors - half)):
        sh(f"dmsetup create --noudevsync {name} --table '0 {length} linear {disk} {start}'")
        minor = sh(f"dmsetup info -c --noheadings -o minor {name}").strip()
        parts.append(f"/dev/dm-{minor}")
    return parts


def unsplit_disk(parts: list[str]) -> None:
    if not parts[0].startswith("/dev/dm-"):
        return
    for name in ("trueno-swap", "trueno-backing"):
        subprocess.run(["dmsetup", "remove", "--noudevsync", name], capture_output=True)


# --- The set-ups -------------------------------------------------------

class ZramTarget(Zram):
    def __init__(self, name: str, size: str, algorithm: str):
        super().__init__(size, algorithm)
        self.name = name

    def mem_used_max(self) -> int:
        return self.mm_stat()[4]

    def failed_writes(self) -> int:
        return int((self.sysfs / "io_stat").read_text().split()[1])

    def daemon_pids(self) -> list[int]:
        return []

    def sample(self) -> None:
        pass


class TruenoTarget(Trueno):
    def __init__(self, name: str, size: str, options: str = "", checkout: Path | None = None):
        if checkout:                    # another build: its own interpreter and package
            super().__init__(size, options, cli=f"{checkout}/.venv/bin/python -m trueno_ublk")
        else:
            super().__init__(size, options)
        self.name = name
        self.peak_held = {}             # sample()'s

    def figures(self) -> dict:
        return stats.figures(admin.request(int(self.path.removeprefix("/dev/ublkb")), "stat"))

    def mem_used_max(self) -> int:
        return self.figures()["mem_used_max"]

    def failed_writes(self) -> int:
        return self.figures().get("failed_writes", 0)

    def daemon_pids(self) -> list[int]:
        """The worker that serves the device; every trueno-ublk process when
        `list` does not name it."""
        try:
            return [self.worker_pid()]
        except (subprocess.CalledProcessError, StopIteration, KeyError):
            pids = sh("pgrep -f 'trueno[-_]ublk' || true").split()
            return [int(p) for p in pids if int(p) != os.getpid()]

    def sample(self) -> None:
        """At our peak so far: what the pages we hold are to swap (held())."""
        figures = self.figures()
        if figures["mem_used_total"] >= self.peak_held.get("mem_used_total", -1):
            self.peak_held = {"mem_used_total": figures["mem_used_total"], **self.held(figures["pages_stored"])}

    def held(self, stored: int) -> dict:
        """Pages we store, by what swap makes of them (pages): out of RAM
        (slots in use, the swap cache's left out), also in RAM (the swap
        cache's: our copy is its backup), and freed by swap but not yet
        discarded (stored beyond the slots in use), which we can only hold."""
        used = swap_used_kib(self.path) // 4
        cached = meminfo("SwapCached") // 4096
        return {"out_of_ram": max(used - cached, 0), "swap_cached": min(cached, used),
                "freed_not_discarded": max(stored - used, 0)}


def swap_used_kib(path: str) -> int:
    """/proc/swaps' Used of `path` (KiB), 0 when it is not swap."""
    for line in Path("/proc/swaps").read_text().splitlines()[1:]:
        fields = line.split()
        if fields and os.path.realpath(fields[0]) == os.path.realpath(path):
            return int(fields[3])
    return 0


class ZswapTarget:
    """Kernel zswap in front of the swap partition `path`: lz4, zsmalloc,
    its pool capped at `limit` bytes of RAM or just under; disabled by
    close(). mem_used_max() is the pool's peak, sampled."""

    name = "zswap-disk"

    def __init__(self, path: str, limit: int):
        self.path = path
        ram = procfs.total_ram_bytes()
        self.percent = limit * 100 // ram
        if self.percent < 1:
            raise SystemExit(f"bench swap: --mem-limit {limit} is under 1% of RAM, zswap's smallest cap")
        self.cap = self.percent * ram // 100
        if not Path("/sys/kernel/debug/zswap").exists():
            subprocess.run(["mount", "-t", "debugfs", "none", "/sys/kernel/debug"], capture_output=True)
        self.peak = 0
        for param, value in (("compressor", "lz4"), ("zpool", "zsmalloc"),
                             ("max_pool_percent", str(self.percent)), ("enabled", "Y")):
            if (ZSWAP / param).exists():            # zpool: gone from newer kernels (zsmalloc only)
                (ZSWAP / param).write_text(value)
        self.params = {p.name: p.read_text().strip() for p in ZSWAP.iterdir()}

    @staticmethod
    def pool_size() -> tuple[int, str]:
        """The pool's bytes, and where they were read."""
        try:
            return int((ZSWAP_DEBUG / "pool_total_size").read_text()), "debugfs pool_total_size"
        except OSError:
            return meminfo("Zswap"), "/proc/meminfo Zswap"

    def sample(self) -> None:
        size, self.source = self.pool_size()
        self.peak = max(self.peak, size)

    def mem_used_max(self) -> int:
        self.sample()
        return self.peak

    def failed_writes(self) -> int:
        return 0                                # dmesg's count tells the disk's

    def daemon_pids(self) -> list[int]:
        return []

    def close(self) -> None:
        (ZSWAP / "enabled").write_text("N")


def on_disk(setup: str) -> bool:
    """Whether `setup` (trueno-disk@NAME too) needs the disk."""
    return setup.split("@")[0] in DISK_SETUPS


def make(setup: str, args, disk_parts: list[str]):
    """The set-up named `setup`."""
    if setup in ("zram-lz4", "zram-zstd"):
        return ZramTarget(setup, args.size, setup.removeprefix("zram-"))
    if setup == "zswap-disk":
        return ZswapTarget(disk_parts[0], parse_size(args.mem_limit))
    if setup == "trueno":
        return TruenoTarget(setup, args.size)
    if setup.startswith("trueno@"):
        return TruenoTarget(setup, args.size, checkout=args.other)
    return TruenoTarget(setup, args.size, f"--mem-limit {args.mem_limit} --backing-dev {disk_parts[1]}",
                        checkout=args.other if "@" in setup else None)


# --- One run -----------------------------------------------------------

class Cgroup:
    """A fresh memory cgroup of `limit` ("max": none) for one run."""

    def __init__(self, limit: str):
        if not Path("/sys/fs/cgroup/cgroup.controllers").exists():
            sh("mount -t cgroup2 none /sys/fs/cgroup")
        Path("/sys/fs/cgroup/cgroup.subtree_control").write_text("+memory")
        if CGROUP.exists():
            CGROUP.rmdir()
        CGROUP.mkdir()
        (CGROUP / "memory.max").write_text(limit)
        self.sampled_swap_peak = 0

    def enter(self) -> None:
        """preexec_fn: the child joins the cgroup."""
        (CGROUP / "cgroup.procs").write_text(str(os.getpid()))

    def sample(self) -> None:
        current = int((CGROUP / "memory.swap.current").read_text())
        self.sampled_swap_peak = max(self.sampled_swap_peak, current)

    def swap_peak(self) -> tuple[int, str]:
        """memory.swap.peak, or the sampled peak of memory.swap.current."""
        peak = CGROUP / "memory.swap.peak"
        if peak.exists():
            return int(peak.read_text()), "memory.swap.peak"
        return self.sampled_swap_peak, "memory.swap.current sampled"

    def oom_kills(self) -> int:
        events = dict(line.split() for line in (CGROUP / "memory.events").read_text().splitlines())
        return int(events.get("oom_kill", 0))

    def remove(self) -> None:
        CGROUP.rmdir()


def counters(target, disk: str | None) -> dict:
    """The cumulative figures a run is the difference of."""
    return {"vmstat": vmstat(), "swap_write_errors": swap_write_errors(),
            "device": block_stat(target.path), "disk": block_stat(disk) if disk else {},
            "threads": threads(target.daemon_pids())}


def sampling(target, cgroup: Cgroup, done: threading.Event) -> threading.Thread:
    """A thread sampling the peaks no counter keeps, until `done`."""
    def sample():
        peak_cached = 0
        while not done.wait(SAMPLE_SECONDS):
            target.sample()
            cgroup.sample()
            peak_cached = max(peak_cached, meminfo("SwapCached"))
        sampler.swap_cached_peak = peak_cached

    sampler = threading.Thread(target=sample)
    sampler.start()
    return sampler


def execute(command: list[str], cgroup: Cgroup) -> dict:
    """The program in `cgroup`: exit code, seconds, major faults, output."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, *command], stdout=out, stderr=err, preexec_fn=cgroup.enter)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        output = out.read().strip()
        own = re.search(r"seconds ([0-9.]+)", output)       # the program's own, after its start-up
        return {"code": proc.returncode, "seconds": round(seconds, 1), "major_faults": usage.ru_majflt,
                "user_seconds": round(usage.ru_utime, 1), "system_seconds": round(usage.ru_stime, 1),
                "program_seconds": float(own.group(1)) if own else None,
                "output": output, "stderr": err.read().strip()[-2000:]}


def outcome(code: int, oom_kills: int) -> str:
    if oom_kills:
        return "killed (OOM)"
    if code < 0:
        return f"killed (signal {-code})"
    return "completed" if code == 0 else f"failed ({code})"


def run(target, command: list[str], limit: str, disk: str | None) -> dict:
    """`command` with `target` as the only swap, in a fresh cgroup of `limit`."""
    sh(f"swapoff -a; mkswap {target.path} && swapon --discard {target.path}")
    sh("sync; echo 3 > /proc/sys/vm/drop_caches")
    cgroup = Cgroup(limit)
    before = counters(target, disk)
    done = threading.Event()
    sampler = sampling(target, cgroup, done)
    proc = execute(command, cgroup)
    done.set()
    sampler.join()
    after = counters(target, disk)
    swap_peak, swap_peak_source = cgroup.swap_peak()
    oom_kills = cgroup.oom_kills()
    cgroup.remove()
    changed = delta(after, before)
    result = {"setup": target.name, "outcome": outcome(proc["code"], oom_kills), **proc,
              "oom_kills": oom_kills, "mem_used_max": target.mem_used_max(),
              "swap_peak": swap_peak, "swap_peak_source": swap_peak_source,
              "swap_cached_peak": sampler.swap_cached_peak,
              "failed_writes": target.failed_writes(), "swap_write_errors": changed["swap_write_errors"],
              **changed["vmstat"], "device": changed["device"], "threads": changed["threads"]}
    if disk:
        result["disk_pages_read"] = changed["disk"]["sectors_read"] // 8
        result["disk_pages_written"] = changed["disk"]["sectors_written"] // 8
    if isinstance(target, TruenoTarget):
        figures = target.figures()
        result["store"] = {key: figures.get(key, 0) for key in STORE_FIGURES}
        result["peak_held"] = target.peak_held
    if isinstance(target, ZswapTarget):
        result.update(zswap_cap=target.cap, zswap_pool_source=target.source, zswap_params=target.params)
    sh(f"swapoff {target.path}")
    return result


def report(r: dict) -> None:
    """One run's line."""
    extra = "".join(f"  {key} {r[key]}" for key in (*VMSTAT_KEYS, "disk_pages_read", "disk_pages_written")
                    if key in r)
    print(f"  {r['program']:8} {r['setup']:12} {r['outcome']:13} {r['seconds']:7.1f} s  "
          f"mem_used_max {r['mem_used_max'] / MiB:6.1f} MiB  swap peak {r['swap_peak'] / MiB:6.1f} MiB  "
          f"SwapCached peak {r['swap_cached_peak'] / MiB:6.1f} MiB  failed writes {r['failed_writes']}"
          f"+{r['swap_write_errors']}{extra}  [{r['output'] or r['stderr'][-200:]}]", flush=True)
    if "store" in r:
        print("    store: " + ", ".join(f"{key} {value:,}" if isinstance(value, int) else f"{key} {value:.1f}"
                                      for key, value in r["store"].items()), flush=True)
    if r.get("peak_held"):
        held = r["peak_held"]
        print(f"    at its peak ({held['mem_used_total'] / MiB:.1f} MiB held), the pages stored, uncompressed: "
              f"out of RAM {held['out_of_ram'] * 4096 / MiB:.1f} MiB, also in the swap cache "
              f"{held['swap_cached'] * 4096 / MiB:.1f} MiB, freed by swap and not yet discarded "
              f"{held['freed_not_discarded'] * 4096 / MiB:.1f} MiB", flush=True)


# --- The tables --------------------------------------------------------

def ratios(r: dict, base: dict, key: str) -> str:
    """r's `key` (seconds) as a multiple of zram lz4's, and trueno-disk's of zswap's too."""
    if "zram-lz4" not in base or not r.get(key):
        return "-"
    text = f"{r[key] / base['zram-lz4'][key]:.2f}"
    if on_disk(r["setup"]) and r["setup"] != "zswap-disk" and "zswap-disk" in base:
        text += f" ({r[key] / base['zswap-disk'][key]:.2f}x zswap)"
    return text


def table(program: str, results: list[dict]) -> None:
    """The issue's table for `program`, and the columns the runs add. The
    program's own time leaves out its interpreter's start-up, which under
    emulation, over 9p and after drop_caches, is a noisy share of the wall
    time."""
    rows = [r for r in results if r["program"] == program]
    base = {r["setup"]: r for r in rows if r["outcome"] == "completed"}
    print(f"\n{program}:\n| set-up | outcome | wall time | x zram lz4 | program's own time | x zram lz4 | "
          "device memory at peak (mem_used_max; zswap: pool peak) | cgroup memory.swap.peak | failed writes | "
          "pswpin | pswpout | zswpout | zswpin | zswpwb | disk pages read | disk pages written |")
    print("|---" * 16 + "|")
    for r in rows:
        cells = [r["setup"], r["outcome"], f"{r['seconds']:.1f} s", ratios(r, base, "seconds"),
                 f"{r['program_seconds']} s", ratios(r, base, "program_seconds"),
                 f"{r['mem_used_max'] / MiB:.0f} MiB", f"{r['swap_peak'] / 1e6:.0f} MB",
                 f"{r['failed_writes'] + r['swap_write_errors']}",
                 *(f"{r[key]:,}" if key in r else "-" for key in (*VMSTAT_KEYS[:2], "zswpout", "zswpin", "zswpwb",
                                                                  "disk_pages_read", "disk_pages_written"))]
        print("| " + " | ".join(cells) + " |")


def profile(results: list[dict]) -> None:
    """Where a read request's time goes: the device's reads, the program's
    major faults and time off the CPU (waiting: for swap-ins, mostly), and
    the daemon's threads per read: CPU (its system share), time waiting for
    a CPU, sleeps."""
    print("\nprofile:\n| program | set-up | device reads | KiB per read | mean read latency | KiB per write | "
          "major faults | program: user, system, off CPU | daemon per read, by thread: CPU (system), run-queue "
          "wait, sleeps |")
    print("|---" * 9 + "|")
    for r in results:
        d = r["device"]
        reads = max(d["reads"], 1)
        per_read = "; ".join(f"{name} {t['cpu_seconds'] / reads * 1e6:.0f} us "
                             f"({t.get('system_seconds', 0) / reads * 1e6:.0f}), "
                             f"{t.get('runqueue_seconds', 0) / reads * 1e6:.0f} us, "
                             f"{t['voluntary_switches'] / reads:.2f}"
                             for name, t in sorted(r["threads"].items()) if t["cpu_seconds"] >= 0.5)
        user, system = r.get("user_seconds", 0), r.get("system_seconds", 0)
        print(f"| {r['program']} | {r['setup']} | {d['reads']:,} | {d['sectors_read'] / 2 / reads:.1f} | "
              f"{d['read_ms'] / reads:.2f} ms | {d['sectors_written'] / 2 / max(d.get('writes', 0), 1):.1f} | "
              f"{r['major_faults']:,} | "
              f"{user:.0f} s, {system:.0f} s, {r['seconds'] - user - system:.0f} s | {per_read or '-'} |")


# --- The benchmark -----------------------------------------------------

def arguments():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--program", choices=sorted(PROGRAMS), action="append",
                    help="a program to run (repeatable; default: program and index)")
    ap.add_argument("--setup", choices=SETUPS, action="append", help="a set-up (repeatable; default: all)")
    ap.add_argument("--mem-limit", default="64M", help="zswap's pool cap and trueno-disk's --mem-limit")
    ap.add_argument("--cgroup", default="160M", help="the programs' memory.max")
    ap.add_argument("--program-mib", type=int, default=10, help="sources the syntax-tree program parses")
    ap.add_argument("--index-mib", type=int, default=150, help="rows the index program builds")
    ap.add_argument("--page-cluster", type=int, action="append",
                    help="vm.page-cluster values to run with (default: the kernel's own)")
    ap.add_argument("--size", default="2G", help="each RAM device's size")
    ap.add_argument("--other", type=Path, help="another checkout, built (its .venv): run as set-ups "
                    "trueno@NAME and trueno-disk@NAME after trueno and trueno-disk, for an A/B in one boot")
    return ap.parse_args()


def command(program: str, args) -> tuple[list[str], str]:
    """The program's command line and its cgroup's memory.max."""
    if program == "churn":
        return [str(PROGRAMS[program]), str(2 * procfs.total_ram_bytes() // MiB)], "max"
    mib = args.program_mib if program == "program" else args.index_mib
    return [str(PROGRAMS[program]), str(mib)], args.cgroup


def main() -> None:
    args = arguments()
    programs = args.program or ["program", "index"]
    setups = [s for s in SETUPS if s in (args.setup or SETUPS)]
    for ours in ("trueno", "trueno-disk") if args.other else ():
        if ours in setups:
            setups.insert(setups.index(ours) + 1, f"{ours}@{args.other.name}")
    disk = os.environ.get("TRUENO_UBLK_DISK")
    if not disk and any(map(on_disk, setups)):
        print(f"bench swap: no disk ($TRUENO_UBLK_DISK): skipping {', '.join(filter(on_disk, setups))}")
        setups = [s for s in setups if not on_disk(s)]
    parts = split_disk(disk) if disk and any(map(on_disk, setups)) else []
    old_cluster = Path("/proc/sys/vm/page-cluster").read_text().strip()
    clusters = args.page_cluster or [int(old_cluster)]
    sh("sysctl -q kernel.hung_task_timeout_secs=30")
    if (ZSWAP / "enabled").exists():
        (ZSWAP / "enabled").write_text("N")     # in front of no set-up but its own
    ram = procfs.total_ram_bytes()
    print(f"swap benchmark: {ram / MiB:.0f} MiB RAM, {os.cpu_count()} CPUs, kernel {os.uname().release}, "
          f"cgroup {args.cgroup}, mem-limit {args.mem_limit}, disk {disk or '-'} as {' and '.join(parts) or '-'}",
          flush=True)
    results = []
    try:
        for program in programs:
            cmd, limit = command(program, args)
            for cluster in clusters:
                Path("/proc/sys/vm/page-cluster").write_text(str(cluster))
                for setup in setups:
                    for part in parts:
                        sh(f"blkdiscard {part} || true")
                    target = make(setup, args, parts)
                    if isinstance(target, ZswapTarget):
                        print(f"  zswap: pool capped at {target.cap / MiB:.1f} MiB (max_pool_percent "
                              f"{target.percent} of MemTotal {ram / MiB:.0f} MiB)", flush=True)
                    try:
                        r = run(target, cmd, limit, disk if on_disk(setup) else None)
                    finally:
                        target.close()
                    r.update(program=program, page_cluster=cluster)
                    results.append(r)
                    report(r)
    finally:
        Path("/proc/sys/vm/page-cluster").write_text(old_cluster)
        if parts:
            unsplit_disk(parts)
    for program in programs:
        table(program, results)
    profile(results)
    out = TOP / "bench-results/swap.json"
    out.write_text(json.dumps({"mem_total": ram, "kernel": os.uname().release, "cpus": os.cpu_count(),
                               "cgroup": args.cgroup, "mem_limit": args.mem_limit, "disk": disk,
                               "disk_parts": parts, "results": results}, indent=1) + "\n")
    print(f"  written to {out.relative_to(TOP)}")


if __name__ == "__main__":
    main()
