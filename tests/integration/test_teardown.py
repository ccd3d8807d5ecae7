"""Stopping a device: delete, SIGTERM and kill -9 during I/O; devices in use."""
import os
import signal
import subprocess
import sys
import time

from trueno_ublk.devices.records import RUN_DIR, log_path

from conftest import run_cli, sh
from faults import PATTERN, alive, list_entry, record, start_fio, wait_for, wait_for_io


def test_kill_9_of_the_daemon_fails_io_fast_and_delete_cleans_up(make_device):
    dev = make_device()
    n = int(dev.removeprefix("/dev/ublkb"))
    fio = start_fio(dev, f"--rw=randrw --bs=4k --iodepth=32 --size=64M --time_based --runtime=1800 {PATTERN}")
    wait_for_io(dev)
    rec = record(dev)
    os.kill(rec["pid"], signal.SIGKILL)
    # The worker follows its daemon (parent-death signal) and stops the
    # device: fio's outstanding and new I/O fail instead of hanging. The
    # daemon's guard records the pages as lost.
    fio.wait(timeout=120)
    assert fio.returncode != 0
    wait_for(lambda: not alive(rec["worker_pid"]), what="the worker to exit")
    wait_for(lambda: list_entry(dev)["state"] == "lost", what="list to show the device lost")
    run_cli("delete", dev)
    assert list_entry(dev) is None and not (RUN_DIR / f"{n}.json").exists()
    assert not os.path.exists(f"/dev/ublkc{n}")
    assert make_device("--id", n) == dev


def test_delete_while_fio_runs_stops_cleanly(make_device):
    dev = make_device()
    n = int(dev.removeprefix("/dev/ublkb"))
    fio = start_fio(dev, f"--rw=randwrite --bs=4k --iodepth=32 --size=64M --time_based --runtime=1800 {PATTERN}")
    wait_for_io(dev)
    started = time.monotonic()
    run_cli("delete", "--force", dev, timeout=300)    # fio holds it open
    # Stopped under fio, not after it (fio would write for half an hour):
    # a bound far above a loaded machine's slowest delete.
    assert time.monotonic() - started < 120
    fio.wait(timeout=120)
    assert not os.path.exists(dev) and not list(RUN_DIR.glob(f"{n}.*"))


def test_sigterm_to_the_daemon_during_io_stops_cleanly(make_device):
    dev = make_device()
    n = int(dev.removeprefix("/dev/ublkb"))
    rec = record(dev)
    fio = start_fio(dev, "--rw=randrw --bs=16k --iodepth=32 --size=64M --time_based --runtime=1800")
    wait_for_io(dev)
    os.kill(rec["pid"], signal.SIGTERM)
    try:
        wait_for(lambda: not alive(rec["pid"]) and not alive(rec["worker_pid"]), what="the daemon to stop")
    except AssertionError:
        raise AssertionError(f"the daemon did not stop; its log:\n{log_path(n).read_text()}") from None
    fio.wait(timeout=120)
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



def test_delete_of_a_device_a_process_holds_open(make_device):
    dev = make_device()
    holder = subprocess.Popen([sys.executable, "-c", f"import os, time; os.open({dev!r}, os.O_RDONLY); "
                               "print('open', flush=True); time.sleep(300)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "open\n"
        if "SAFE_STOP_DEV" in record(dev)["features"]:
            # 7.0+: the kernel refuses to stop an open device (TRY_STOP_DEV),
            # so `delete` refuses at once and names who holds it (a delete
            # that waited would wait for the holder, 300 s).
            started = time.monotonic()
            result = run_cli("delete", dev, check=False, timeout=280)
            assert result.returncode != 0 and time.monotonic() - started < 60
            assert f"pid {holder.pid} (python" in result.stderr and "--force" in result.stderr
            assert len(result.stderr.strip().splitlines()) == 1
            assert list_entry(dev)["state"] == "live"
        # --force stops it under its holder, on every kernel.
        run_cli("delete", "--force", dev, timeout=280)
        assert list_entry(dev) is None
    finally:
        holder.kill()
        holder.wait()
