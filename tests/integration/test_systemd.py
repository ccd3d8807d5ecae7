"""The unit under real systemd, as users run it: swap from the generator,
a program's memory swapped out to the device, then `systemctl restart` of
the service and kill -9 of its every process, each followed by the program
reading back every page while the new daemon takes the device over with
the arena systemd kept; then `systemctl stop`, which swaps off first. And
a mounted filesystem's files through a restart, unmounted by the stop.

The guest's own PID 1 is virtme-ng's init, so systemd runs as PID 1 of a
PID namespace of its own (a container, to systemd), managing units in the
guest's mounts, cgroups and devices: only a throwaway guest can lend it
those, so the test runs only there."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli
from faults import WORKLOAD_CGROUP, Workload, record, swap_used_kib, wait_for

SYSTEMD = "/lib/systemd/systemd"
NAME = "ublkb9"
DEV = f"/dev/{NAME}"
SERVICE = f"trueno-ublk@{NAME}.service"
SWAP = f"dev-{NAME}.swap"
FS_DEV = "/dev/ublkb8"
FS_SERVICE = "trueno-ublk@ublkb8.service"
MOUNT_POINT = "/run/truenotest"
MOUNT = "run-truenotest.mount"
CONFIG = Path("/etc/trueno-ublk.conf")
TARGET = Path("/run/systemd/system/trueno-ublk-test.target")
HERE = Path(__file__).parent
TEMPLATE = HERE.parents[1] / "systemd/trueno-ublk@.service"
UNIT = Path("/etc/systemd/system") / TEMPLATE.name
GENERATOR = Path("/etc/systemd/system-generators/trueno-ublk-generator")
CLI = Path(sys.executable).with_name("trueno-ublk")

if not os.environ.get("TRUENO_UBLK_GUEST") or not os.path.exists(SYSTEMD):
    pytest.skip("needs systemd and a guest to hand it (scripts/test runs it in one)",
                allow_module_level=True)


class Systemd:
    """systemd as PID 1 of a new PID namespace, started with only what the
    test target pulls in; systemctl talks to it from inside."""

    def __init__(self):
        self.unshare = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount", "--mount-proc", "--kill-child",
             "env", "container=", SYSTEMD, "--log-target=kmsg", f"--unit={TARGET.name}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        children = Path(f"/proc/{self.unshare.pid}/task/{self.unshare.pid}/children")
        try:
            wait_for(lambda: children.read_text().strip(), what="systemd to start")
            self.pid = int(children.read_text().split()[0])
            wait_for(lambda: self.ctl("is-system-running", check=False) in ("running", "degraded"),
                     timeout=180, what="systemd to finish starting up")
        except BaseException:
            self.unshare.kill()         # --kill-child: systemd and its services go with it
            self.unshare.wait()
            raise

    def ctl(self, *args, check=True) -> str:
        result = subprocess.run(["nsenter", "-t", str(self.pid), "-m", "-p", "systemctl", "--no-pager", *args],
                                capture_output=True, text=True, timeout=300)
        if check and result.returncode != 0:
            raise AssertionError(f"systemctl {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result.stdout.strip()

    def kill_unit(self, unit: str) -> None:
        """kill -9 of every process of `unit` at once, through its cgroup's
        cgroup.kill: what `systemctl kill --signal=KILL` does, except that
        this nested systemd now and then fails it (EIO signalling the
        unit's other processes, once in a CI run)."""
        cgroup = Path("/sys/fs/cgroup") / self.show(unit, "ControlGroup").lstrip("/")
        (cgroup / "cgroup.kill").write_text("1")

    def show(self, unit: str, prop: str) -> str:
        return self.ctl("show", "-P", prop, unit)

    def log(self) -> str:
        """What systemd said lately (it logs to the kernel's ring buffer)."""
        lines = subprocess.run(["dmesg"], capture_output=True, text=True).stdout.splitlines()
        return "\n".join([line for line in lines if "systemd[1]" in line or "trueno" in line][-40:])

    def close(self) -> None:
        self.ctl("stop", SWAP, MOUNT, SERVICE, FS_SERVICE, check=False)
        os.kill(self.pid, signal.SIGKILL)       # the namespace's every process with it
        self.unshare.wait(timeout=60)


@pytest.fixture(scope="module")
def systemd():
    assert not CONFIG.exists(), f"{CONFIG} exists in the guest: the test would overwrite it"
    # The units systemd starts run this checkout, whichever one the machine's
    # set-up installed them for (the guest's /etc is a throwaway overlay).
    for path in (UNIT, GENERATOR):
        path.parent.mkdir(parents=True, exist_ok=True)
    UNIT.write_text(TEMPLATE.read_text().replace("/usr/local/bin/trueno-ublk", str(CLI)))
    GENERATOR.unlink(missing_ok=True)
    GENERATOR.symlink_to(CLI.with_name(GENERATOR.name))
    CONFIG.write_text(f"[{NAME}]\nsize = 256\n\n"
                      f"[{FS_DEV.removeprefix('/dev/')}]\nsize = 128\nfs-type = ext4\nmount-point = {MOUNT_POINT}\n")
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_text(f"[Unit]\nDescription=trueno-ublk test: its swap and mount, nothing else\n"
                      f"Wants=swap.target {MOUNT}\n")
    manager = None
    try:
        manager = Systemd()
        yield manager
    finally:
        if manager:
            manager.close()
        for dev in (DEV, FS_DEV):
            if os.path.exists(dev):
                run_cli("delete", "--force", dev, check=False)
        CONFIG.unlink()
        TARGET.unlink()


def test_restart_and_kill_9_of_the_unit_keep_every_swapped_page(systemd):
    wait_for(lambda: swap_used_kib(DEV) is not None, timeout=120, what=f"{SWAP} to swap on {DEV}",
             detail=systemd.log)
    swap_invocation = systemd.show(SWAP, "InvocationID")
    workload = Workload(mib=128, memory_max=32 << 20)
    try:
        workload.expect("written", timeout=600)
        assert swap_used_kib(DEV) > 64 << 10, "the program's pages did not go to swap"
        for how in ("restart", "kill -9"):
            before = systemd.show(SERVICE, "MainPID")
            if how == "restart":
                systemd.ctl("restart", SERVICE)
            else:
                systemd.kill_unit(SERVICE)
            wait_for(lambda: systemd.show(SERVICE, "ActiveState") == "active"
                     and systemd.show(SERVICE, "MainPID") not in (before, "0"),
                     timeout=120, what=f"the service back after {how}", detail=systemd.log)
            # The swap never went off: no swapoff pulled the pages back first.
            assert systemd.show(SWAP, "InvocationID") == swap_invocation, systemd.log()
            assert swap_used_kib(DEV) > 64 << 10, systemd.log()
            rec = record(DEV)
            assert rec["state"] == "live" and str(rec["pid"]) == systemd.show(SERVICE, "MainPID"), rec
            # Two more passes: one whole pass began after the takeover.
            after = workload.passes_done()
            wait_for(lambda: workload.passes_done() >= after + 2, timeout=600,
                     what=f"the program to read every page after {how}")
        assert systemd.show(SERVICE, "NRestarts") == "1"
        # `systemctl stop`: the daemon swaps off first, every page back in
        # the program's memory (now allowed to hold them), then deletes.
        (WORKLOAD_CGROUP / "memory.max").write_text("max")
        systemd.ctl("stop", SERVICE)
        assert swap_used_kib(DEV) is None and not os.path.exists(DEV), systemd.log()
        assert systemd.show(SWAP, "ActiveState") == "inactive"
        after = workload.passes_done()
        wait_for(lambda: workload.passes_done() > after, timeout=600, what="a pass after the stop")
        workload.finish()
    finally:
        workload.kill()


def test_a_mounted_filesystem_keeps_its_files_through_a_restart_and_the_stop_unmounts_it(systemd):
    # The mount is in systemd's mount namespace: reach it through its root.
    data_path = Path(f"/proc/{systemd.pid}/root{MOUNT_POINT}/data")
    wait_for(lambda: systemd.show(MOUNT, "ActiveState") == "active", timeout=120, what=f"{MOUNT}", detail=systemd.log)
    data = os.urandom(16 << 20)
    data_path.write_bytes(data)
    os.sync()
    invocation, before = systemd.show(MOUNT, "InvocationID"), systemd.show(FS_SERVICE, "MainPID")
    systemd.ctl("restart", FS_SERVICE)
    wait_for(lambda: systemd.show(FS_SERVICE, "ActiveState") == "active"
             and systemd.show(FS_SERVICE, "MainPID") not in (before, "0"),
             timeout=120, what="the service back after restart")
    assert systemd.show(MOUNT, "InvocationID") == invocation, systemd.log()
    Path("/proc/sys/vm/drop_caches").write_text("3")      # read from the device again
    assert data_path.read_bytes() == data
    systemd.ctl("stop", FS_SERVICE)
    assert systemd.show(MOUNT, "ActiveState") == "inactive", systemd.log()
    assert not os.path.exists(FS_DEV)
