"""Nothing grows with use: create/delete cycles, recovery cycles."""
import os
import signal
import subprocess
from pathlib import Path

from trueno_ublk.devices.records import RUN_DIR

from conftest import run_cli, sh
from faults import FIO, list_entry, record, wait_for


def _system_snapshot() -> dict:
    meminfo = dict(line.split(":") for line in Path("/proc/meminfo").read_text().splitlines())
    return {
        "shmem_kb": int(meminfo["Shmem"].split()[0]),
        "devices": sorted(os.listdir("/sys/class/ublk-char")),
        "state": sorted(os.listdir(RUN_DIR)) if RUN_DIR.exists() else [],
        "daemons": int(subprocess.run("pgrep -fc 'trueno-ublk create' || true", shell=True,
                                      capture_output=True, text=True).stdout.strip() or 0),
    }


def _slope(values: list[float]) -> float:
    """Least-squares growth per step of a series."""
    n = len(values)
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    return (sum((x - mean_x) * (y - mean_y) for x, y in enumerate(values))
            / sum((x - mean_x) ** 2 for x in range(n)))


def test_create_delete_cycles_leak_nothing():
    """Six cycles, alternating one and two queues. A leak grows with the
    cycles, so the test measures the slope of shmem over them: each device
    held at least 4 MiB of shmem (the 4 MiB written), so a leaked arena
    would add that much per cycle, where noise stays far below 256 KiB."""
    before = _system_snapshot()
    shmem_kb = []
    for i in range(6):
        dev = run_cli("create", "--size", "64M", "--queues", str(1 + i % 2)).stdout.strip()
        sh(f"dd if=/dev/urandom of={dev} bs=1M count=4 oflag=direct status=none")
        run_cli("delete", dev)
        shmem_kb.append(_system_snapshot()["shmem_kb"])
    after = _system_snapshot()
    assert after["devices"] == before["devices"] and after["state"] == before["state"]
    assert after["daemons"] == before["daemons"]
    assert _slope(shmem_kb) < 256, shmem_kb
    assert after["shmem_kb"] - before["shmem_kb"] < 2048, (before, after)


def _open_fds(pid) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_recovery_cycles_leak_nothing_in_the_daemon(make_device):
    dev = make_device()
    rec = record(dev)
    daemon = rec["pid"]
    fds, threads = _open_fds(daemon), len(os.listdir(f"/proc/{daemon}/task"))
    rss = int(Path(f"/proc/{daemon}/statm").read_text().split()[1])
    for cycle in range(1, 11):
        worker = record(dev)["worker_pid"]
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: record(dev)["recoveries"] == cycle
                 and record(dev)["state"] == "live", what=f"recovery {cycle}")
    assert list_entry(dev)["recoveries"] == 10 and list_entry(dev)["state"] == "live"
    assert _open_fds(daemon) == fds
    assert len(os.listdir(f"/proc/{daemon}/task")) == threads
    assert int(Path(f"/proc/{daemon}/statm").read_text().split()[1]) < rss + 256   # pages
    sh(f"{FIO} --filename={dev} --rw=randwrite --bs=4k --iodepth=16 --size=16M --verify=crc32c")

