"""What a swap server needs before its first request: locked memory, no OOM
kill, IO_FLUSHER queue threads."""
from pathlib import Path

import pytest

from faults import record

# Process settings (mlock, OOM score, PR_SET_IO_FLUSHER), the same on every kernel.
pytestmark = pytest.mark.same_on_every_kernel

# task flags (include/linux/sched.h) that PR_SET_IO_FLUSHER sets
PF_MEMALLOC_NOIO, PF_LOCAL_THROTTLE = 0x80000, 0x100000


def test_queue_threads_are_io_flushers_and_memory_is_locked(device):
    rec = record(device)
    for pid in (rec["pid"], rec["worker_pid"]):
        status = Path(f"/proc/{pid}/status").read_text()
        locked_kb = int(next(line for line in status.splitlines() if line.startswith("VmLck")).split()[1])
        assert locked_kb > 0, f"pid {pid} has no locked memory"
        assert Path(f"/proc/{pid}/oom_score_adj").read_text().strip() == "-1000"
    io_threads = []
    for task in Path(f"/proc/{rec['worker_pid']}/task").iterdir():
        name = (task / "comm").read_text().strip()
        if name.startswith("ublk-"):            # queue threads and their helpers
            flags = int((task / "stat").read_text().split(")")[1].split()[6])
            assert flags & PF_MEMALLOC_NOIO and flags & PF_LOCAL_THROTTLE, (name, hex(flags))
            io_threads.append(name)
    assert "ublk-q0" in io_threads

