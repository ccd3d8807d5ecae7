"""The config file: size expressions, every key, errors with their lines."""
import subprocess
import sys
from pathlib import Path

import pytest

from trueno_ublk import config

CLI = str(Path(sys.executable).with_name("trueno-ublk"))
RAM = 8192.0                        # MiB


def write(tmp_path, text, name="trueno-ublk.conf"):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("expression, mib", [
    ("min(ram / 2, 4096)", 4096), ("ram / 4", 2048), ("512", 512), ("max(ram // 3, 100)", 2730),
    ("(ram - 1024) * 0.5", 3584), ("-(-7)", 7), ("ram % 1000", 192),
])
def test_size_expressions(expression, mib):
    assert config.evaluate_size(expression, RAM) == mib


@pytest.mark.parametrize("expression, why", [
    ("__import__('os')", "not allowed"), ("ram ** 2", "not allowed"), ("open('x')", "not allowed"),
    ("ram /", "not a size expression"), ("ram / 0", "divides by zero"), ("memory", "not allowed"),
    ("min()", "not allowed"), ("'4G'", "not allowed"),
])
def test_bad_size_expressions(expression, why):
    with pytest.raises(ValueError, match=why):
        config.evaluate_size(expression, RAM)


def test_defaults_follow_zram_generator(tmp_path):
    (dev,) = config.load([write(tmp_path, "[ublkb0]\n")], ram=RAM)
    assert (dev.dev_id, dev.size, dev.algorithm, dev.swap_priority, dev.options, dev.is_swap) == \
        (0, 4096 << 20, "lz4", 100, "discard", True)
    (small,) = config.load([write(tmp_path, "[ublkb1]\n")], ram=1000)
    assert small.size == 500 << 20


def test_every_key(tmp_path):
    path = write(tmp_path, "# comment\n[ublkb3]\nsize = 1000.5\nalgorithm = zstd:3\nqueues = 1\n"
                           "mem-limit = 256M\nswap-priority = -1\nfs-type = ext4\n"
                           "mount-point = /var/tmp//scratch/\noptions = noatime\n")
    (dev,) = config.load([path], ram=RAM)
    assert dev.size == int(1000.5 * (1 << 20)) // 4096 * 4096
    assert (dev.algorithm, dev.queues, dev.mem_limit, dev.swap_priority) == ("zstd:3", 1, 256 << 20, -1)
    assert (dev.fs_type, dev.mount_point, dev.options, dev.is_swap) == \
        ("ext4", "/var/tmp/scratch", "noatime", False)


@pytest.mark.parametrize("body, line, message", [
    ("[ublkb0]\nsise = 1\n", 2, "unknown key 'sise' in [ublkb0]"),
    ("[zram0]\n", 1, "bad section [zram0]"),
    ("size = 1\n", 1, "outside any [ublkbN] section"),
    ("[ublkb0]\nsize\n", 2, "expected 'key = value'"),
    ("[ublkb0]\nsize = 1\nsize = 2\n", 3, "'size' is set twice"),
    ("[ublkb0]\n\nalgorithm = lzo\n", 3, "unknown algorithm 'lzo'"),
    ("[ublkb0]\nqueues = 0\n", 2, "queues must be a whole number"),
    ("[ublkb0]\nqueues = two\n", 2, "queues must be a whole number"),
    ("[ublkb0]\nmem-limit = lots\n", 2, "not a size"),
    ("[ublkb0]\nswap-priority = 40000\n", 2, "swap-priority must be"),
    ("[ublkb0]\nsize = ram - ram\n", 2, "at least 4K"),
    ("[ublkb0]\nfs-type = ext4\n", 2, "has fs-type but no mount-point"),
    ("[ublkb0]\nmount-point = /mnt\n", 2, "has mount-point but no fs-type"),
    ("[ublkb0]\nfs-type = ext4\nmount-point = relative/dir\n", 3, "absolute path"),
    ("[ublkb0]\nfs-type = ext4;rm\nmount-point = /mnt\n", 2, "not a filesystem type"),
])
def test_errors_carry_file_and_line(tmp_path, body, line, message):
    path = write(tmp_path, body)
    devices, errors = config.load_all_errors([path], ram=RAM)
    assert devices == [] or all(d.name != "ublkb0" for d in devices)
    assert any(str(e).startswith(f"{path}:{line}: ") and message in str(e) for e in errors), errors


def test_drop_ins_override_per_key_in_name_order(tmp_path):
    main = write(tmp_path, "[ublkb0]\nsize = 1024\nalgorithm = zstd\n")
    write(tmp_path, "[ublkb0]\nsize = 2048\n", "trueno-ublk.conf.d/20-size.conf")
    write(tmp_path, "[ublkb0]\nsize = 512\n[ublkb1]\n", "trueno-ublk.conf.d/10-first.conf")
    files = config.config_files(main)
    assert [f.name for f in files] == ["trueno-ublk.conf", "10-first.conf", "20-size.conf"]
    dev0, dev1 = config.load(files, ram=RAM)
    assert (dev0.size, dev0.algorithm, dev1.name) == (2048 << 20, "zstd", "ublkb1")


def test_config_check_command(tmp_path):
    good = write(tmp_path, "[ublkb0]\nsize = ram / 4\n[ublkb2]\nfs-type = ext4\nmount-point = /mnt/x\n")
    result = subprocess.run([CLI, "config", "check", str(good)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"{good}: OK, 2 device(s)"
    assert "ublkb2:" in result.stdout and "ext4 on /mnt/x" in result.stdout
    bad = write(tmp_path, "[ublkb0]\nsize = ram ** 2\nqueues = x\n", "bad.conf")
    result = subprocess.run([CLI, "config", "check", str(bad)], capture_output=True, text=True)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"trueno-ublk: {bad}:2: ") and f"{bad}:3:" in lines[1]
    assert "Traceback" not in result.stderr
    missing = subprocess.run([CLI, "config", "check", str(tmp_path / "nope")], capture_output=True, text=True)
    assert missing.returncode != 0 and missing.stderr.strip().endswith("no such file")
