"""CLI errors that need no kernel: one line, non-zero exit, no traceback."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trueno_ublk.base.errors import UserError
from trueno_ublk.cli.options import parse_device

from one_line_error import assert_one_line_error

CLI = str(Path(sys.executable).with_name("trueno-ublk"))
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (setpriv, /run/trueno-ublk)")


def run_cli(*args, user=None):
    cmd = [CLI, *map(str, args)]
    if user:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


# Each of these fails on its options, before the kernel is asked anything:
# they need no ublk driver.
@pytest.mark.parametrize("size, why", [
    ("0", "greater than 0"), ("-1G", "not a size"), ("12Q", "not a size"),
    ("4097", "multiple of 4K"), ("1.5", "whole number"), ("", "not a size"),
])
def test_bad_size(size, why):
    assert_one_line_error(run_cli("create", "--size", size), why)


def test_unknown_algorithm():
    result = run_cli("create", "--size", "1G", "--algorithm", "lzo")
    assert_one_line_error(result, "unknown algorithm 'lzo'", "lz4, lz4hc, zstd")
    result = run_cli("create", "--size", "1G", "--algorithm", "zstd:99")
    assert_one_line_error(result, "zstd level")


@pytest.mark.parametrize("option, value", [
    ("--queues", "0"), ("--queues", "999"), ("--queues", "two"),
    ("--depth", "0"), ("--depth", "5000"), ("--depth", "-3"),
])
def test_bad_counts(option, value):
    assert_one_line_error(run_cli("create", "--size", "1G", option, value), option)


@pytest.mark.parametrize("args, why", [
    (["create", "--size", "1G", "--recompress-after", "soon"], "--recompress-after must be a duration"),
    (["create", "--size", "1G", "--recompress-after", "-1"], "--recompress-after must be a duration"),
    (["create", "--size", "1G", "--entropy-threshold", "8.5"], "from 0 (never) to 8"),
    (["create", "--size", "1G", "--entropy-threshold", "inf"], "from 0 (never) to 8"),
    (["create", "--size", "1G", "--recompress-algorithm", "none"], "cannot be none"),
    (["create", "--size", "1G", "--recompress-algorithm", "zstd:0"], "zstd level"),
    (["recompress", "0", "--type", "cold"], "'cold' is not one of"),
    (["recompress", "0", "--max-pages", "-1"], "--max-pages"),
    (["recompress", "0", "--algorithm", "none"], "cannot be none"),
    (["recompress", "/dev/sda"], "not a ublk device"),
    (["idle", "0", "--age", "yesterday"], "--age must be a duration"),
    (["idle"], "Missing argument"),
])
def test_bad_cold_page_options(args, why):
    assert_one_line_error(run_cli(*args), why)


def test_batched_commands_leave_a_queue_to_one_thread():
    result = run_cli("create", "--size", "1G", "--queue-threads", "2", "--io-commands", "batch")
    assert_one_line_error(result, "--io-commands batch", "--queue-threads")


@needs_root
def test_not_root():
    result = run_cli("create", "--size", "1G", user=65534)
    assert_one_line_error(result, "root")
    assert_one_line_error(run_cli("delete", "0", user=65534), "root")


@needs_root
@pytest.mark.parametrize("name", ["/dev/ublkb77", "77"])
def test_device_not_found(name):
    assert_one_line_error(run_cli("delete", name), "no such device")


def test_not_a_device_name():
    assert_one_line_error(run_cli("delete", "/dev/sda"), "not a ublk device")


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


def _commands():
    """Every command of the CLI, with its path (e.g. ("config", "check"))."""
    import click
    from cli_tree import walk

    from trueno_ublk.cli import cli
    return [(path, command) for path, command in walk(cli) if not isinstance(command, click.Group)]


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


def test_each_command_loads_by_its_own_name_and_only_its_module():
    """The table of lazily loaded commands names each one as click does, and
    a command's run imports its own module only (what start-up pays for)."""
    import click

    from trueno_ublk.cli import COMMANDS, cli
    ctx = click.Context(cli)
    assert all(cli.get_command(ctx, name).name == name for name in COMMANDS)
    assert cli.get_command(ctx, "nonsense") is None
    loaded = subprocess.run([sys.executable, "-c", "import sys\nfrom trueno_ublk.cli import main\n"
                             "sys.argv = ['trueno-ublk', 'stat', '--help']\n"
                             "try:\n    main()\nfinally:\n"
                             "    print(sorted(m for m in sys.modules if m.startswith('trueno_ublk.cli.')))"],
                            capture_output=True, text=True, check=True).stdout.splitlines()[-1]
    assert loaded == str(["trueno_ublk.cli.devices", "trueno_ublk.cli.options"])
