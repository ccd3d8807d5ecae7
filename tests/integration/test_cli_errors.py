"""Errors a user meets with a real device or driver: one line on stderr,
non-zero exit, no traceback. (Errors in the options alone are checked
natively, in tests/unit/test_cli.py.)"""
import os
import subprocess

import pytest

from conftest import CLI, run_cli, sh
from one_line_error import assert_one_line_error

# What the CLI says, from checks of its own before and after the kernel's
# answers, which are the same on every kernel.
pytestmark = pytest.mark.same_on_every_kernel


def test_device_id_busy(make_device):
    dev = make_device()
    n = dev.removeprefix("/dev/ublkb")
    result = run_cli("create", "--size", "64M", "--id", n, check=False)
    assert_one_line_error(result, "already exists")


def test_delete_refuses_a_mounted_device(make_device):
    import tempfile
    dev = make_device()
    sh(f"mkfs.ext4 -q -F {dev}")
    with tempfile.TemporaryDirectory() as mnt:
        sh(f"mount {dev} {mnt}")
        try:
            assert_one_line_error(run_cli("delete", dev, check=False), "in use", "--force")
        finally:
            sh(f"umount {mnt}")
    run_cli("delete", dev)


def test_no_control_device():
    sh("modprobe -r ublk_drv")
    try:
        result = run_cli("create", "--size", "1G", check=False)
        assert_one_line_error(result, "/dev/ublk-control", "modprobe ublk_drv")
    finally:
        sh("modprobe ublk_drv")


def test_create_fails_in_one_line_when_a_queue_thread_cannot_start():
    """Without CAP_SYS_RESOURCE a queue thread cannot become an IO flusher:
    `create` must say so and leave nothing behind, not wait forever.
    (The OOM score of -1000 is set here first, with the capability, so that
    the daemon may keep it without one.)"""
    def protect():
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("-1000")

    before = sorted(os.listdir("/sys/class/ublk-char"))
    result = subprocess.run(["setpriv", "--inh-caps=-sys_resource", "--bounding-set=-sys_resource",
                             CLI, "create", "--size", "64M"], capture_output=True, text=True,
                            timeout=120, preexec_fn=protect)
    assert_one_line_error(result, "IO flusher", "CAP_SYS_RESOURCE")
    assert sorted(os.listdir("/sys/class/ublk-char")) == before
