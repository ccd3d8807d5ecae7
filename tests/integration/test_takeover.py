"""A device outliving its daemon: handed over to new code (`upgrade`), taken
over with the arena systemd kept (emulated here by the descriptor-passing
protocol systemd uses, sd_listen_fds(3)), or, where nothing kept the pages,
its held I/O ended by the daemon's guard instead of held forever."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import CLI, run_cli, sh
from faults import (
    FIO,
    PATTERN,
    WORKLOAD_CGROUP,
    Workload,
    alive,
    list_entry,
    record,
    start_fio,
    start_load,
    stop_load,
    swap_used_kib,
    verified_io_across,
    wait_for,
    wait_for_io,
)

VERIFY = f"--bs=4k --iodepth=32 --size=64M --verify=crc32c --verify_fatal=1 {PATTERN}"
ARENA = "/memfd:trueno-ublk-arena"


def kernel_features() -> set[str]:
    from trueno_ublk.base.control import Control, feature_names
    with Control() as ctrl:
        return set(feature_names(ctrl.features))


def daemon_fds(pid) -> list[str]:
    return sorted(os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))


def keep_arena(pid) -> int:
    """What systemd's descriptor store does: hold the daemon's arena."""
    fd_dir = f"/proc/{pid}/fd"
    fd = next(f for f in os.listdir(fd_dir) if os.readlink(f"{fd_dir}/{f}").startswith(ARENA))
    return os.open(f"{fd_dir}/{fd}", os.O_RDWR)


def start_with_kept_arena(dev_id: int, arena_fd: int, *args) -> subprocess.Popen:
    """`create --foreground` as systemd starts it after a restart: the kept
    arena as descriptor 3, named in LISTEN_FDNAMES, for this very pid."""
    launcher = ("import os, sys; os.dup2(int(sys.argv[1]), 3); "
                "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', LISTEN_FDNAMES=sys.argv[2]); "
                "os.execv(sys.argv[3], sys.argv[3:])")
    return subprocess.Popen([sys.executable, "-c", launcher, str(arena_fd), f"arena-{dev_id}", CLI, "create",
                             "--foreground", "--id", str(dev_id), *map(str, args)],
                            pass_fds=(arena_fd,), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_whole_daemon(rec) -> None:
    """`pkill -9 trueno-ublk`: every process of the device at once."""
    for pid in (rec["pid"], rec["worker_pid"]):
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(rec["pid"]) and not alive(rec["worker_pid"]), what="the daemon to die")


def guard_of(rec) -> str:
    """The daemon's guard (daemon/guard.py): its child that is not the worker."""
    children = Path(f"/proc/{rec['pid']}/task/{rec['pid']}/children").read_text().split()
    guards = [c for c in children if Path(f"/proc/{c}/comm").read_text().strip() == "trueno-guard"]
    assert len(guards) == 1, children
    return guards[0]


def memory_kib(pid, fields) -> dict[str, int]:
    lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    return {f: int(next(line for line in lines if line.startswith(f + ":")).split()[1]) for f in fields}


def kernel_state(dev) -> int:
    from trueno_ublk.base.control import Control
    with Control() as ctrl:
        return ctrl.info(int(dev.removeprefix("/dev/ublkb"))).state


@pytest.mark.parametrize("io_commands", ["per-tag", "batch"])
def test_upgrade_under_fio_keeps_every_page_and_holds_io_and_more_cycles_leak_nothing(make_device, io_commands):
    if io_commands == "batch" and "BATCH_IO" not in kernel_features():
        pytest.skip("batched I/O commands need Linux 7.0")
    dev = make_device("--queues", "2", "--io-commands", io_commands)      # the default: I/O held
    rec = record(dev)
    # 6.16+: the worker leaves with nothing in flight (QUIESCE), except where
    # commands are batched, which leave as after a crash (see supervisor.py).
    assert ("QUIESCE" in rec["features"]) == ("QUIESCE" in kernel_features() and io_commands == "per-tag")
    sh(f"{FIO} --filename={dev} --rw=randwrite {VERIFY}")
    # The readers read on until the upgrade and the writers are done.
    out = verified_io_across(dev, "64M", lambda: run_cli("upgrade", dev, timeout=300).stdout, "the upgrade", 3000)
    assert out.startswith(f"{dev}: upgraded in place (I/O held)"), out
    entry = list_entry(dev)
    assert entry["state"] == "live" and entry["pid"] == rec["pid"] and entry["worker"] != rec["worker_pid"]
    assert record(dev)["takeovers"] == 1 and record(dev)["recoveries"] == 0
    assert Path(f"/proc/{rec['pid']}/comm").read_text().strip() == "trueno-ublk"
    sh(f"{FIO} --filename={dev} --rw=randwrite --verify_only {VERIFY}")

    daemon = rec["pid"]
    guard = guard_of(rec)           # the same one, adopted by each upgrade
    fds = daemon_fds(daemon)
    assert sum(f.startswith(ARENA) for f in fds) == 1
    # A leak shows after any cycle: a descriptor (compared exactly) or an
    # arena (the device's memory, far above the shmem noise) more each time;
    # two more upgrades show it as well as more would.
    shmem = []
    for _ in range(2):
        run_cli("upgrade", dev)
        shmem.append(int(next(line for line in Path("/proc/meminfo").read_text().splitlines()
                              if line.startswith("Shmem:")).split()[1]))
    assert daemon_fds(daemon) == fds                           # no descriptor gained across execs
    children = Path(f"/proc/{daemon}/task/{daemon}/children").read_text().split()
    assert sorted(children) == sorted([str(record(dev)["worker_pid"]), guard])  # no stray process
    assert record(dev)["takeovers"] == 3
    assert max(shmem) - min(shmem) < 4096, shmem               # one arena, not one per upgrade
    sh(f"{FIO} --filename={dev} --rw=randwrite --verify_only {VERIFY}")


def test_a_program_in_swap_reads_every_page_across_kill_9_of_the_worker_and_an_upgrade(make_device):
    """Without systemd, with the defaults: the kernel holds swap's I/O while
    no worker serves, and the program never sees an error (a swap-in that
    failed would kill it with SIGBUS)."""
    dev = make_device(size="512M")
    sh(f"mkswap {dev} && swapon {dev}")
    workload = Workload(mib=48, memory_max=16 << 20)
    try:
        workload.expect("written", timeout=600)
        assert swap_used_kib(dev) > 24 << 10, "the program's pages did not go to swap"
        events = {"kill -9 of the worker": lambda: os.kill(record(dev)["worker_pid"], signal.SIGKILL),
                  "upgrade": lambda: run_cli("upgrade", dev, timeout=300)}
        for what, event in events.items():
            before = record(dev)
            event()
            wait_for(lambda: record(dev)["state"] == "live" and record(dev)["worker_pid"] != before["worker_pid"],
                     timeout=120, what=f"a new worker after the {what}")
            # Two more passes: one whole pass read every page after the event.
            after = workload.passes_done()
            wait_for(lambda: workload.passes_done() >= after + 2, timeout=600,
                     what=f"the program to read every page after the {what}")
        assert record(dev)["takeovers"] == 1
        (WORKLOAD_CGROUP / "memory.max").write_text("max")
        sh(f"swapoff {dev}")
        workload.finish()
    finally:
        workload.kill()
        sh(f"swapoff {dev} 2>/dev/null || true")


def test_kill_9_of_the_whole_daemon_never_leaves_io_waiting_forever(make_device):
    """No systemd here: nothing can bring the pages back once supervisor and
    worker are dead. The kernel holds the I/O (as for a dead worker); the
    daemon's guard, which `pkill trueno-ublk` spares, stops the device, so
    the held I/O fails within seconds, and `list` says what happened."""
    dev = make_device()
    rec = record(dev)
    assert "USER_RECOVERY_REISSUE" in rec["features"] and "USER_RECOVERY_FAIL_IO" not in rec["features"]
    guard = guard_of(rec)
    # Spared by the OOM killer no less than the daemon; its memory locked
    # (a guard swapped out to the device it guards could not run); small.
    oom = {p: int(Path(f"/proc/{p}/oom_score_adj").read_text()) for p in (rec["pid"], guard)}
    assert oom[guard] <= oom[rec["pid"]], oom
    locked = next(line for line in Path(f"/proc/{guard}/status").read_text().splitlines() if line.startswith("VmLck"))
    assert int(locked.split()[1]) > 0, locked
    memory = memory_kib(guard, ("Rss", "Pss", "Private_Clean", "Private_Dirty"))
    print(f"guard memory (KiB): {memory}")
    assert memory["Private_Clean"] + memory["Private_Dirty"] < 8 << 10, memory
    fio = start_fio(dev, "--rw=randrw --bsrange=4k-64k --iodepth=32 --size=64M --time_based --runtime=1800")
    wait_for_io(dev)
    sh("pkill -9 -x trueno-ublk")
    killed = time.monotonic()
    wait_for(lambda: not alive(rec["pid"]) and not alive(rec["worker_pid"]), what="the daemon to die")
    fio.wait(timeout=60)        # a hang ends here, not in a guest that never finishes
    ended = time.monotonic() - killed
    print(f"held I/O ended {ended:.1f}s after kill -9 of the daemon")
    assert fio.returncode != 0 and ended < 30, (ended, fio.stderr.read())
    wait_for(lambda: not alive(guard), what="the guard to finish")
    listed = run_cli("list")
    assert any(line.startswith(dev) and line.endswith("lost") for line in listed.stdout.splitlines()), listed.stdout
    assert f"{dev}: its daemon died, and every page with it" in listed.stderr
    # New I/O fails at once too: nothing waits for a server.
    started = time.monotonic()
    dd = subprocess.run(f"dd if={dev} of=/dev/null bs=4k count=1 iflag=direct", shell=True,
                        capture_output=True, timeout=60)
    assert dd.returncode != 0 and time.monotonic() - started < 30
    run_cli("delete", dev)
    assert list_entry(dev) is None and not os.path.exists(dev)


def test_a_kept_arena_brings_the_device_back_after_kill_9(make_device):
    """systemd's restart of a killed daemon, step by step: the arena kept,
    a new daemon started with it takes the device over, and the reads held
    meanwhile complete with the pages written before."""
    dev = make_device("--io-without-server", "hold")
    dev_id = int(dev.removeprefix("/dev/ublkb"))
    sh(f"{FIO} --filename={dev} --rw=randwrite {VERIFY}")
    rec = record(dev)
    arena = keep_arena(rec["pid"])
    # Reading until the new daemon served them (stop_load below).
    held = start_load(dev, "--rw=randread --bs=4k --iodepth=32 --size=64M")
    wait_for_io(dev)
    kill_whole_daemon(rec)
    try:
        # Checked before anything is touched: the wrong codec, the wrong
        # arena, a device that is not there. Each one line; the device waits.
        for args, message in ((("--size", "256M", "-a", "zstd"), "not compressed with zstd"),):
            bad = start_with_kept_arena(dev_id, arena, *args)
            _, err = bad.communicate(timeout=60)
            assert bad.returncode == 1 and message in err and err.count("\n") == 1, err
        other = os.memfd_create("other")
        os.ftruncate(other, 1 << 20)
        bad = start_with_kept_arena(dev_id, other, "--size", "256M")
        _, err = bad.communicate(timeout=60)
        assert bad.returncode == 1 and "does not hold a device of its size" in err, err
        os.close(other)
        assert kernel_state(dev) == 2 and held.poll() is None       # QUIESCED, reads still waiting

        daemon = start_with_kept_arena(dev_id, arena, "--size", "256M")
        assert daemon.stdout.readline().strip() == dev
    finally:
        os.close(arena)
    wait_for(lambda: record(dev)["state"] == "live", what="the new daemon to serve the device")
    assert held.poll() is None, f"the reads ended before the new daemon served them: {held.stderr.read()}"
    assert stop_load(held) == 0, held.stderr.read()
    now = record(dev)
    assert now["state"] == "live" and now["takeovers"] == 1 and now["pid"] == daemon.pid
    sh(f"{FIO} --filename={dev} --rw=randwrite --verify_only {VERIFY}")
    # The new daemon now owns it: another one is refused.
    arena = keep_arena(daemon.pid)
    try:
        bad = start_with_kept_arena(dev_id, arena, "--size", "256M")
        _, err = bad.communicate(timeout=60)
        assert bad.returncode == 1 and f"belongs to the running daemon {daemon.pid}" in err, err
    finally:
        os.close(arena)
    run_cli("delete", dev)
    daemon.wait(timeout=120)
    assert daemon.returncode == 0 and list_entry(dev) is None


def test_upgrade_errors(make_device):
    dev = make_device("--no-recovery")
    result = run_cli("upgrade", dev, check=False)
    assert result.returncode == 1 and "without user recovery" in result.stderr
    result = run_cli("upgrade", "/dev/ublkb977", check=False)
    assert result.returncode == 1 and result.stderr == "trueno-ublk: no such device: /dev/ublkb977\n"
