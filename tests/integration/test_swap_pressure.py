"""Swap under real memory pressure: our device as the machine's only swap,
a churn of about twice the machine's RAM (swap_workload.py), watched for a
deadlock. Runs in its own small guest (scripts/test boots one
with 512 MiB); on a bigger machine it would not press anything, so it is
skipped there. scripts/bench swap runs the same workload beside kernel zram.
With an empty disk (scripts/vm --disk) the churn runs a second time through
a memory limit below it, the rest spilled to the disk."""
import ctypes
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from trueno_ublk.devices.records import record_path

from conftest import devices_state, run_cli, sh
from faults import completed_ios, record, wait_for

MEM_TOTAL_MB = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
WORKLOAD = Path(__file__).with_name("swap_workload.py")
MiB = 1 << 20
DISK = os.environ.get("TRUENO_UBLK_DISK")
STALL_S = 180                   # no request completed this long, the workload waiting: a deadlock
REPORT_S = 60                   # the alarm's report, gathered within this or cut short by the crash
RESERVE_SHORT = 8 * MiB          # the reserve while free memory is short (native/page_store/reserve.c)
RESERVE_SPARE = 1 * MiB          # and while it is to spare
CHURN_MAX_S = 1200              # a churn takes 3-7 minutes beside another guest: longer is a livelock
MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4

pytestmark = pytest.mark.skipif(MEM_TOTAL_MB > 1024, reason="needs a machine with <= 1 GiB RAM "
                                "(scripts/test boots one)")


def rss_kb(pid) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * 4


def mm_stat(dev) -> dict:
    return json.loads(run_cli("stat", "--json", dev).stdout)


def held_beyond_reserve(stats) -> int:
    """mem_used_total less the reserve, which grows to RESERVE_SHORT while
    free memory is short and shrinks back when it is not."""
    return stats["mem_used_total"] - stats["mem_reserve"]


def swap_only_on(dev):
    """Make `dev` the machine's only swap, the hung-task detector reporting
    (not panicking: a swap-in that waits a minute on a machine whose cores
    other guests share is slow, not deadlocked; churn() tells the two apart)."""
    sh("sysctl -q kernel.hung_task_timeout_secs=60 kernel.hung_task_panic=0 kernel.hung_task_warnings=-1")
    sh(f"swapoff -a && mkswap {dev} && swapon --discard {dev}")


def kernel_log() -> list:
    """The kernel's log, read here: a deadlocked swap may not let a new
    process (dmesg) start."""
    lines = []
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    try:
        while True:
            try:
                record = os.read(fd, 8192).decode(errors="replace")
            except BlockingIOError:
                return lines
            except BrokenPipeError:         # overwritten while read: go on
                continue
            lines.append(record.split(";", 1)[-1].rstrip("\n"))
    finally:
        os.close(fd)


def hung_reports() -> list:
    return [line for line in kernel_log() if "blocked for more than" in line]


class Alarm:
    """How the watch reports a deadlock or a livelock: onto the console go
    every blocked task's stack (sysrq w), then the daemon's threads' and the
    hung-task reports so far; then the guest is crashed, so that scripts/vm
    prints them and the run fails at once -- nothing on this machine can
    swap any more, the clean-up included. What it writes to is opened
    beforehand, and a thread set waiting beforehand crashes the guest
    REPORT_S after the alarm even if gathering the report waits for memory
    (reading a thread's stack allocates)."""

    def __init__(self):
        self.sysrq = os.open("/proc/sysrq-trigger", os.O_WRONLY)
        self.kmsg = os.open("/dev/kmsg", os.O_WRONLY)
        self.raised, self.reported = threading.Event(), threading.Event()
        self.closed = False
        self.crasher = threading.Thread(target=self._crash, daemon=True)
        self.crasher.start()

    def _crash(self):
        self.raised.wait()
        if not self.closed:
            self.reported.wait(REPORT_S)
            os.write(self.sysrq, b"c")

    def raise_(self, worker_pid, why: str):
        os.write(self.sysrq, b"8")      # the console shows it all from now on
        os.write(self.sysrq, b"w")
        self.raised.set()
        os.write(self.kmsg, f"trueno-ublk test: {why}; the daemon's threads:\n".encode())
        for task in sorted(Path(f"/proc/{worker_pid}/task").iterdir()):
            try:
                comm = (task / "comm").read_text().strip()
                state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
                lines = [f"{comm} ({task.name}) {state}", *(task / "stack").read_text().splitlines()]
            except OSError:             # the thread ended meanwhile
                continue
            for line in lines:
                os.write(self.kmsg, f"{line[:900]}\n".encode())
        for line in ["the hung-task reports so far:", *hung_reports()]:
            os.write(self.kmsg, f"{line[:900]}\n".encode())
        self.reported.set()

    def close(self):
        """No alarm: the crasher ends without crashing anything."""
        self.closed = True
        self.raised.set()
        self.crasher.join()
        os.close(self.sysrq)
        os.close(self.kmsg)


def churn(dev, mib: int, worker_pid) -> str:
    """Run the workload over `mib` MiB, watched; its line of figures, every
    page right. While it runs this process stays in RAM (mlocked as it
    faults), so that the watch goes on whatever swap does: a deadlock is
    the device completing nothing for STALL_S seconds while the workload
    waits, not a swap-in that took long; a livelock, a churn past
    CHURN_MAX_S."""
    hung_before = len(hung_reports())
    alarm = Alarm()
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) == 0, os.strerror(ctypes.get_errno())
    workload = subprocess.Popen([sys.executable, str(WORKLOAD), str(mib)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        seen, since = completed_ios(dev), time.monotonic()
        deadline = since + CHURN_MAX_S
        while True:
            try:
                out, err = workload.communicate(timeout=1)
                break
            except subprocess.TimeoutExpired:
                pass
            now = completed_ios(dev)
            if now != seen:
                seen, since = now, time.monotonic()
            elif time.monotonic() - since > STALL_S:
                alarm.raise_(worker_pid, f"no request of {dev} completed in {STALL_S} s while the workload ran")
            if time.monotonic() > deadline:
                alarm.raise_(worker_pid, f"the workload ran {CHURN_MAX_S} s, requests of {dev} completing")
    finally:
        if workload.returncode is None:
            workload.kill()
            workload.wait()
        libc.munlockall()
        alarm.close()
    assert workload.returncode == 0, f"workload failed: {out} {err}"
    assert " bad 0 " in out
    hung = hung_reports()[hung_before:]
    return out.strip() + f"; {len(hung)} hung-task reports" + "".join(f"\n  {line}" for line in hung)


def test_churn_twice_ram_through_our_swap(make_device):
    # The cold-page policy at work throughout: the background's moves on a
    # one-second idle time, and passes by hand, all under reclaim.
    dev = make_device("--recompress-after", "1", size="2G")
    n = dev.removeprefix("/dev/ublkb")
    rec = json.loads(record_path(int(n)).read_text())
    rss_empty = rss_kb(rec["worker_pid"])
    fixed = held_beyond_reserve(mm_stat(dev))       # held empty, the reserve left out
    swap_only_on(dev)
    churning = threading.Event()
    reserves = []                                   # the reserve seen while churning

    def recompress_by_hand():
        while not churning.wait(2):
            run_cli("recompress", dev, "--max-pages", "2000", check=False, timeout=600)
            reserves.append(mm_stat(dev)["mem_reserve"])
    by_hand = threading.Thread(target=recompress_by_hand)
    try:
        by_hand.start()
        figures = churn(dev, 2 * MEM_TOTAL_MB, rec["worker_pid"])
        churning.set()
        by_hand.join()

        # The program's slots come back as swap's discards of the clusters
        # it freed, after it exited; the store then compacts what they
        # freed. Until it holds what it stores, packed (asserted below).
        def packed(stats) -> bool:
            return held_beyond_reserve(stats) - fixed <= 1.25 * stats["compr_data_size"] + 4 * MiB
        wait_for(lambda: packed(mm_stat(dev)), timeout=300, what="the store to compact what swap freed",
                 detail=lambda: mm_stat(dev))
        stats = mm_stat(dev)
        # Pages really went through the device, and none failed: a write that
        # found the reserve empty (reserve_misses) took a larger free slot.
        assert stats["writes"] > 0 and stats["reads"] > 0
        assert stats["failed_writes"] == 0 and stats["failed_reads"] == 0, devices_state()
        assert stats["recompressions"] > 0, stats
        # Free memory ran short: the reserve grew past its spare size,
        # towards its full one (sampled between writes that take from it).
        assert RESERVE_SPARE < max(reserves) <= RESERVE_SHORT, reserves
        assert stats["mem_used_max"] > 64 * MiB
        # Nobody ran `compact`: the store compacted itself as swap freed slots,
        # and after the churn it holds what it stores, packed (zsmalloc keeps
        # within a few percent), beyond what it held empty.
        assert stats["pages_compacted"] > 0
        held = held_beyond_reserve(stats) - fixed
        print(f"after the churn: {held / MiB:.1f} MiB held for {stats['compr_data_size'] / MiB:.1f} MiB "
              f"compressed; peak {stats['mem_used_max'] / MiB:.1f} MiB; reserve misses "
              f"{stats['reserve_misses']}; {figures}")
        assert held <= 1.25 * stats["compr_data_size"] + 4 * MiB, stats
        # The daemon survived (no OOM kill) and holds little beyond what it stores.
        assert run_cli("list", "--json", "-o", "NAME,STATE").stdout.count('"live"') == 1
        assert rss_kb(rec["worker_pid"]) <= rss_empty + stats["mem_used_max"] // 1024 + 64 * 1024
        assert "Killed process" not in sh("dmesg")
    finally:
        churning.set()
        if by_hand.is_alive():
            by_hand.join()
        sh(f"swapoff {dev}", timeout=1800)


@pytest.mark.skipif(not DISK, reason="needs an empty disk to write back to: scripts/vm --disk 1G")
def test_churn_through_a_memory_limit_below_it_spills_to_the_backing_device(make_device):
    # As much as RAM: about half of it goes to swap, taking some 80 MiB of
    # store at its peak, held in 32 MiB of RAM, the rest written back by
    # the default policy.
    limit = 32 * MiB
    dev = make_device("--mem-limit", str(limit), "--backing-dev", DISK, size="2G")
    worker_pid = record(dev)["worker_pid"]
    fixed = held_beyond_reserve(mm_stat(dev))
    swap_only_on(dev)
    try:
        figures = churn(dev, MEM_TOTAL_MB, worker_pid)
        stats = mm_stat(dev)
        print(f"through a {limit // MiB} MiB limit: peak {stats['mem_used_max'] / MiB:.1f} MiB in RAM; "
              f"{stats['bd_writes']} pages written back, {stats['bd_reads']} read back; "
              f"{figures}")
        # Pages went out to the disk and came back from it, and no write
        # failed: each found room the spill made.
        assert stats["bd_writes"] > 0 and stats["bd_reads"] > 0, stats
        assert stats["failed_writes"] == 0 and stats["failed_reads"] == 0, devices_state()
        assert stats["bd_read_errors"] == stats["bd_write_errors"] == 0, devices_state()
        assert stats["mem_used_max"] <= fixed + limit + RESERVE_SHORT, devices_state()
        assert "Killed process" not in sh("dmesg")
    finally:
        sh(f"swapoff {dev}", timeout=1800)
