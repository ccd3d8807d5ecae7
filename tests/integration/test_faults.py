"""Faults: killed daemons and workers, stops during I/O, recovery, leaks."""
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import run_cli, sh

RUN_DIR = Path("/run/trueno-ublk")
PF_MEMALLOC_NOIO, PF_LOCAL_THROTTLE = 0x80000, 0x100000
FIO = "fio --name=t --ioengine=io_uring --direct=1 --output-format=terse"
PATTERN = "--buffer_compress_percentage=50 --refill_buffers"


def record(dev) -> dict:
    """The daemon's record, which `list` shows: cheap enough to poll (each
    `list` is a new process), so waits poll it and `list` checks the end."""
    return json.loads((RUN_DIR / f"{dev.removeprefix('/dev/ublkb')}.json").read_text())


def list_entry(dev) -> dict | None:
    out = run_cli("list", "--json", "-o", "NAME,STATE,PID,WORKER,RECOVERIES").stdout
    return next((d for d in json.loads(out)["devices"] if d["name"] == dev), None)


def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def start_fio(dev, args) -> subprocess.Popen:
    return subprocess.Popen(f"{FIO} --filename={dev} {args}", shell=True, cwd="/tmp",
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def completed_ios(dev) -> int:
    """Reads plus writes the block layer has completed on `dev`."""
    fields = Path(f"/sys/block/{dev.removeprefix('/dev/')}/stat").read_text().split()
    return int(fields[0]) + int(fields[4])


def wait_for_io(dev, ios=2000):
    """Until `ios` more requests have completed: fio is under way, with
    requests in flight, when the fault strikes."""
    start = completed_ios(dev)
    wait_for(lambda: completed_ios(dev) >= start + ios, what=f"{ios} I/Os on {dev}")


def alive(pid) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0]
    except FileNotFoundError:
        return False
    return status != "Z"


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


def test_kill_9_of_the_daemon_fails_io_fast_and_delete_cleans_up(make_device):
    dev = make_device()
    n = int(dev.removeprefix("/dev/ublkb"))
    fio = start_fio(dev, f"--rw=randrw --bs=4k --iodepth=32 --size=64M --time_based --runtime=120 {PATTERN}")
    wait_for_io(dev)
    rec = record(dev)
    os.kill(rec["pid"], signal.SIGKILL)
    # The worker follows its daemon (parent-death signal) and stops the
    # device: fio's outstanding and new I/O fail instead of hanging.
    fio.wait(timeout=30)
    assert fio.returncode != 0
    wait_for(lambda: not alive(rec["worker_pid"]), what="the worker to exit")
    assert list_entry(dev)["state"] == "dead"
    run_cli("delete", dev)
    assert list_entry(dev) is None and not (RUN_DIR / f"{n}.json").exists()
    assert not os.path.exists(f"/dev/ublkc{n}")
    assert make_device("--id", n) == dev


def test_kill_9_of_the_worker_without_recovery_fails_io_and_removes_the_device(make_device):
    dev = make_device("--no-recovery")
    rec = record(dev)
    assert "USER_RECOVERY" not in rec["features"]
    fio = start_fio(dev, f"--rw=randread --bs=4k --iodepth=32 --size=64M --time_based --runtime=120")
    wait_for_io(dev)
    os.kill(rec["worker_pid"], signal.SIGKILL)
    fio.wait(timeout=30)
    assert fio.returncode != 0
    wait_for(lambda: not alive(rec["pid"]), what="the daemon to exit")
    assert list_entry(dev) is None and not os.path.exists(dev)


def test_recovery_after_the_worker_is_killed_keeps_every_page(make_device):
    dev = make_device("--queues", "2")
    verify = f"--bs=4k --iodepth=32 --size=96M --verify=crc32c --verify_fatal=1 {PATTERN}"
    sh(f"{FIO} --filename={dev} --rw=randwrite {verify}")
    before = json.loads(run_cli("stat", "--json", dev).stdout)
    rec = record(dev)
    # Reads and writes in flight while the worker dies: the kernel holds
    # them and reissues them to the new worker.
    readers = start_fio(dev, "--rw=randread --bs=4k --iodepth=64 --size=96M --time_based --runtime=10")
    writers = start_fio(dev, f"--rw=randwrite --bs=64k --iodepth=8 --offset=96M --size=64M "
                             f"--verify=crc32c --verify_fatal=1 {PATTERN}")
    wait_for_io(dev, 4000)
    os.kill(rec["worker_pid"], signal.SIGKILL)
    for job in (readers, writers):
        job.wait(timeout=120)
        assert job.returncode == 0, job.stderr
    entry = list_entry(dev)
    assert entry["state"] == "live" and entry["recoveries"] == 1
    assert entry["worker"] != rec["worker_pid"] and entry["pid"] == rec["pid"]
    after = json.loads(run_cli("stat", "--json", dev).stdout)
    assert after["pages_stored"] >= before["pages_stored"]
    sh(f"{FIO} --filename={dev} --rw=randwrite --verify_only {verify}")
    # And it can die again: a second recovery.
    os.kill(entry["worker"], signal.SIGKILL)
    wait_for(lambda: record(dev)["recoveries"] == 2 and record(dev)["state"] == "live",
             what="the second recovery")
    assert list_entry(dev)["recoveries"] == 2 and list_entry(dev)["state"] == "live"
    sh(f"{FIO} --filename={dev} --rw=randwrite --verify_only {verify}")


def test_delete_while_fio_runs_stops_cleanly(make_device):
    dev = make_device()
    n = int(dev.removeprefix("/dev/ublkb"))
    fio = start_fio(dev, f"--rw=randwrite --bs=4k --iodepth=32 --size=64M --time_based --runtime=120 {PATTERN}")
    wait_for_io(dev)
    started = time.monotonic()
    run_cli("delete", dev, timeout=60)
    assert time.monotonic() - started < 30
    fio.wait(timeout=30)
    assert not os.path.exists(dev) and not list(RUN_DIR.glob(f"{n}.*"))


def test_sigterm_to_the_daemon_during_io_stops_cleanly(make_device):
    dev = make_device()
    n = int(dev.removeprefix("/dev/ublkb"))
    rec = record(dev)
    fio = start_fio(dev, "--rw=randrw --bs=16k --iodepth=32 --size=64M --time_based --runtime=120")
    wait_for_io(dev)
    os.kill(rec["pid"], signal.SIGTERM)
    wait_for(lambda: not alive(rec["pid"]) and not alive(rec["worker_pid"]), what="the daemon to stop")
    fio.wait(timeout=30)
    assert not os.path.exists(dev) and not list(RUN_DIR.glob(f"{n}.*"))
    assert list_entry(dev) is None


def test_delete_of_swap_or_mounted_device_needs_force(make_device):
    swap, fs = make_device(), make_device()
    sh(f"mkswap {swap} && swapon {swap}")
    sh(f"mkfs.ext4 -q {fs} && mkdir -p /tmp/faults-mnt && mount {fs} /tmp/faults-mnt")
    try:
        for dev in (swap, fs):
            result = run_cli("delete", dev, check=False)
            assert result.returncode != 0
            assert result.stderr.strip().endswith("unmount or swapoff it first, or pass --force")
            assert len(result.stderr.strip().splitlines()) == 1 and os.path.exists(dev)
    finally:
        sh(f"swapoff {swap}; umount /tmp/faults-mnt")


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
    """Twelve cycles, alternating one and two queues. A leak grows with the
    cycles, so the test measures the slope of shmem over them: each device
    held at least 4 MiB of shmem (the 4 MiB written), so a leaked arena
    would add that much per cycle, where noise stays far below 256 KiB."""
    before = _system_snapshot()
    shmem_kb = []
    for i in range(12):
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


def test_admin_clients_that_disconnect_mid_reply_do_not_disturb_io(device):
    n = device.removeprefix("/dev/ublkb")
    stop = threading.Event()

    def hostile():
        while not stop.is_set():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(f"/run/trueno-ublk/{n}.sock")
                s.sendall(b'{"command": "stat"}\n')
                s.recv(1)                                   # then hang up mid-reply
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(f"/run/trueno-ublk/{n}.sock")
                s.sendall(b'{"command": "stat"')             # truncated, then gone

    clients = [threading.Thread(target=hostile) for _ in range(4)]
    for c in clients:
        c.start()
    try:
        sh(f"{FIO} --filename={device} --rw=randwrite --bs=8k --iodepth=32 --size=48M "
           f"--verify=crc32c --verify_fatal=1 {PATTERN}")
    finally:
        stop.set()
        for c in clients:
            c.join()
    assert json.loads(run_cli("stat", "--json", device).stdout)["failed_writes"] == 0


@pytest.mark.parametrize("queues", [2])
def test_jobs_with_mixed_sizes_and_overlapping_writes_verify_across_queues(make_device, queues):
    dev = make_device("--queues", queues)
    # Four jobs, each in its own 32 MiB region, overwriting random blocks of
    # 512 B to 128 KiB (norandommap: ranges overlap); fio verifies the last
    # write of every block.
    sh(f"{FIO} --filename={dev} --numjobs=4 --offset_increment=32M --size=32M --rw=randwrite "
       f"--bsrange=512-128k --norandommap --io_size=48M --iodepth=16 --verify=crc32c "
       f"--verify_fatal=1 {PATTERN} --group_reporting", timeout=900)
