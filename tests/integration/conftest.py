"""Integration tests: the real ublk driver, through the real CLI.

They need root and /dev/ublk-control: scripts/test runs them natively where
the kernel has ublk and in the guest (scripts/vm) where it has not.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).with_name("trueno-ublk"))

if not os.path.exists("/dev/ublk-control") or os.geteuid() != 0:
    pytest.skip("needs root and the ublk driver (run through scripts/test)",
                allow_module_level=True)


def run_cli(*args, check=True, timeout=120, user=None):
    cmd = [CLI, *map(str, args)]
    if user:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr}")
    return result


def sh(cmd: str, timeout=600) -> str:
    # In /tmp: fio leaves verify state files in its working directory.
    result = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=timeout,
                            cwd="/tmp")
    assert result.returncode == 0, (f"{cmd} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n"
                                    f"{devices_state()}")
    return result.stdout


def devices_state() -> str:
    """What a failed command leaves to read: each device's figures (a write
    the store failed shows there) and the kernel's last words."""
    names = sorted(p for p in os.listdir("/dev") if p.startswith("ublkb"))
    parts = [run_cli("stat", "--json", f"/dev/{name}", check=False).stdout for name in names]
    dmesg = subprocess.run(["dmesg"], capture_output=True, text=True).stdout.splitlines()
    return "\n".join(parts + dmesg[-20:])


def _device_maker():
    """make(*create options, size=) -> path, and a cleanup that deletes
    whatever it made and is still there."""
    created = []

    def make(*args, size="256M"):
        path = run_cli("create", "--size", size, *args).stdout.strip()
        assert path.startswith("/dev/ublkb"), path
        assert os.path.exists(path)
        created.append(path)
        return path

    def cleanup():
        for path in created:
            if os.path.exists(path):
                run_cli("delete", "--force", path, check=False)
    return make, cleanup


@pytest.fixture
def make_device():
    """Create devices through the CLI; delete whatever is left afterwards."""
    make, cleanup = _device_maker()
    yield make
    cleanup()


@pytest.fixture
def device(make_device):
    return make_device()


@pytest.fixture(scope="module")
def shared_device():
    """One device for a module's tests that each write and check their own
    data and look at nothing else of the device (no counters, no memory):
    each is spared a create and a delete."""
    make, cleanup = _device_maker()
    yield make()
    cleanup()
