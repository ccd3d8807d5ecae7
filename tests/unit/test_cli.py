"""CLI errors that need no kernel: one line, non-zero exit, no traceback."""
import subprocess
import sys
from pathlib import Path

import pytest

from trueno_ublk.cli import parse_device
from trueno_ublk.errors import UserError

CLI = str(Path(sys.executable).with_name("trueno-ublk"))


@pytest.mark.parametrize("text, n", [("/dev/ublkb0", 0), ("ublkb12", 12), ("3", 3)])
def test_parse_device(text, n):
    assert parse_device(text) == n


@pytest.mark.parametrize("text", ["/dev/sda", "ublkc0", "-1", "zero", ""])
def test_parse_device_rejects(text):
    with pytest.raises(UserError):
        parse_device(text)


@pytest.mark.parametrize("args", [
    ["create"], ["create", "--size"], ["create", "--size", "1G", "--store", "disk"],
    ["create", "--size", "1G", "--queues", "x"], ["frobnicate"], ["delete"],
    ["create", "--size", "0"], ["create", "--size", "1G", "-a", "snappy"],
])
def test_usage_errors_are_one_line(args):
    result = subprocess.run([CLI, *args], capture_output=True, text=True)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("trueno-ublk: ")
