"""CLI errors that need no kernel: one line, non-zero exit, no traceback."""
import os
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


NONSENSE = ["", "-1", "1e99", "../../etc/passwd", "x" * 5000, "☃"]


def _commands(group=None, prefix=()):
    """Every command of the CLI, with its path (e.g. ("config", "check"))."""
    import click
    from trueno_ublk.cli import cli
    group = group or cli
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, prefix + (name,))
        else:
            yield prefix + (name,), command


def _nonsense_cases():
    import click
    for path, command in _commands():
        for param in command.params:
            if isinstance(param, click.Option) and not param.is_flag and param.name != "help":
                yield path, param.opts[0]
            elif isinstance(param, click.Argument):
                yield path, None


@pytest.mark.parametrize("path, option", list(_nonsense_cases()))
def test_every_option_given_nonsense(path, option):
    """Nonsense for every option of every command: at most one line on
    stderr, never a traceback, never a hang, never a device left behind.
    (Where the kernel has no ublk, the commands stop at that, after
    checking their options.)"""
    base = ["--size", "64M"] if path == ("create",) and option != "--size" else []
    for value in NONSENSE:
        args = [*path, *base, option, value] if option else [*path, value]
        result = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=60)
        assert "Traceback" not in result.stderr, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        if path == ("config", "check"):         # one line per problem in the file
            assert all(line.startswith("trueno-ublk: ") for line in lines), (args, lines)
        elif result.returncode != 0:
            assert len(lines) == 1, (args, result.stderr)
    assert not os.path.exists("/sys/class/ublk-char") or not os.listdir("/sys/class/ublk-char")
