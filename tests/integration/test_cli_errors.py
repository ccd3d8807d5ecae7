"""Every error a user can cause: one line on stderr, non-zero exit, no traceback."""
import pytest

from conftest import run_cli, sh


def assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("size, why", [
    ("0", "greater than 0"), ("-1G", "not a size"), ("12Q", "not a size"),
    ("4097", "multiple of 4K"), ("1.5", "whole number"), ("", "not a size"),
])
def test_bad_size(size, why):
    assert_one_line_error(run_cli("create", "--size", size, check=False), why)


def test_unknown_algorithm():
    result = run_cli("create", "--size", "1G", "--algorithm", "lzo", check=False)
    assert_one_line_error(result, "unknown algorithm 'lzo'", "lz4, lz4hc, zstd")
    result = run_cli("create", "--size", "1G", "--algorithm", "zstd:99", check=False)
    assert_one_line_error(result, "zstd level")


@pytest.mark.parametrize("option, value", [
    ("--queues", "0"), ("--queues", "999"), ("--queues", "two"),
    ("--depth", "0"), ("--depth", "5000"), ("--depth", "-3"),
])
def test_bad_counts(option, value):
    assert_one_line_error(run_cli("create", "--size", "1G", option, value, check=False), option)


def test_not_root():
    result = run_cli("create", "--size", "1G", check=False, user=65534)
    assert_one_line_error(result, "root")
    assert_one_line_error(run_cli("delete", "0", check=False, user=65534), "root")


@pytest.mark.parametrize("name", ["/dev/ublkb77", "77"])
def test_device_not_found(name):
    assert_one_line_error(run_cli("delete", name, check=False), "no such device")


def test_not_a_device_name():
    assert_one_line_error(run_cli("delete", "/dev/sda", check=False), "not a ublk device")


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

