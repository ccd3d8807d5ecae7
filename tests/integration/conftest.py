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


MiB = 1 << 20
# Real text, which zstd shrinks well below LZ4 (fio's buffers are either
# that compressible to both or to neither): a shell command that prints it.
TEXT = "cat $(find /usr/lib/python3* -name '*.py' | sort)"
SECTOR = 512


class Backing:
    """A device-mapper device over a loop device over a file in the guest:
    its table switches between the loop device (linear) and `error`."""

    def __init__(self, name: str, size: int, tmp_path):
        self.name, self.size = name, size
        self.file = tmp_path / f"{name}.img"
        sh(f"dd if=/dev/zero of={self.file} bs=1M count={size // MiB} status=none")
        self.loop = sh(f"losetup --find --show {self.file}").strip()
        self.path = f"/dev/mapper/{name}"
        sh(f"dmsetup create {name} --table '{self.table('linear')}'")

    def table(self, target: str) -> str:
        sectors = self.size // SECTOR
        return f"0 {sectors} linear {self.loop} 0" if target == "linear" else f"0 {sectors} error"

    def switch(self, target: str) -> None:
        sh(f"dmsetup suspend {self.name} && dmsetup load {self.name} --table '{self.table(target)}' "
           f"&& dmsetup resume {self.name}")

    def remove(self) -> None:
        subprocess.run(["dmsetup", "remove", "--retry", self.name], capture_output=True)
        subprocess.run(["losetup", "-d", self.loop], capture_output=True)
        self.file.unlink(missing_ok=True)


@pytest.fixture
def backing(tmp_path):
    """make(size) -> a Backing; each removed after the test (after its ublk
    device: make_device's clean-up runs first, being set up later)."""
    for module in ("loop", "dm-mod"):
        subprocess.run(["modprobe", module], capture_output=True)
    made = []

    def make(size=64 * MiB):
        made.append(Backing(f"trueno-backing-{len(made)}", size, tmp_path))
        return made[-1]
    yield make
    for b in made:
        b.remove()
