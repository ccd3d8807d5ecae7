"""The config file: size expressions, every key, errors with their lines,
drop-ins, and the commands that read it (config check, create --from-config)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from trueno_ublk import cli
from trueno_ublk.base import control
from trueno_ublk.base.errors import UserError
from trueno_ublk.cli import options
from trueno_ublk.daemon import detach
from trueno_ublk.devices import records
from trueno_ublk.stores import backing
from trueno_ublk.systemd import config

CLI = str(Path(sys.executable).with_name("trueno-ublk"))
RAM = 8192.0                        # MiB
MiB = 1 << 20


def write(tmp_path, text, name="trueno-ublk.conf"):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- size expressions ------------------------------------------------------

@pytest.mark.parametrize("expression, mib", [
    ("min(ram / 2, 4096)", 4096), ("ram / 4", 2048), ("512", 512), ("max(ram // 3, 100)", 2730),
    ("(ram - 1024) * 0.5", 3584), ("-(-7)", 7), ("+7", 7), ("min(ram, 100, 50)", 50),
    ("max(1000)", 1000), ("ram / 3", 8192 / 3), ("  ram  ", 8192),
])
def test_size_expressions(expression, mib):
    assert config.evaluate_size(expression, RAM) == mib


@pytest.mark.parametrize("expression, why", [
    ("__import__('os')", "not allowed"), ("ram ** 2", "not allowed"), ("open('x')", "not allowed"),
    ("ram % 1000", "not allowed"), ("memory", "not allowed"), ("min()", "not allowed"),
    ("'4G'", "not allowed"), ("True", "not allowed"), ("min(*[1, 2])", "not allowed"),
    ("max(ram, key=abs)", "not allowed"), ("ram.real", "not allowed"), ("[ram][0]", "not allowed"),
    ("ram if ram else 1", "not allowed"), ("lambda: 1", "not allowed"), ("ram < 1", "not allowed"),
    ("4G", "not a size expression"), ("ram /", "not a size expression"), ("", "not a size expression"),
    ("ram; 1", "not a size expression"), ("-" * 100000 + "1", "not a size expression"),
    ("(" * 300 + "1" + ")" * 300, "not a size expression"),
    ("ram / 0", "divides by zero"), ("ram // (ram - ram)", "divides by zero"),
    ("1e308 * 10", "too large"), ("1e308 * 10 - 1e308 * 10", "too large"),
    ("10" * 400 + " / 3", "too large"),
])
def test_bad_size_expressions(expression, why):
    with pytest.raises(ValueError, match=why) as error:
        config.evaluate_size(expression, RAM)
    assert len(str(error.value)) < 150        # long input is cut short: one readable line


def test_size_rounds_down_to_whole_pages(tmp_path):
    (dev,) = config.load([write(tmp_path, "[ublkb0]\nsize = 1000.5\n")], ram=RAM)
    assert dev.size == 1000 * MiB + 512 * 1024
    (dev,) = config.load([write(tmp_path, "[ublkb0]\nsize = 0.00390625\n")], ram=RAM)   # 4 KiB
    assert dev.size == 4096


# --- keys ------------------------------------------------------------------

def test_defaults_follow_zram_generator(tmp_path):
    (dev,) = config.load([write(tmp_path, "[ublkb0]\n")], ram=RAM)
    assert (dev.dev_id, dev.size, dev.size_expression, dev.algorithm, dev.queues, dev.mem_limit,
            dev.swap_priority, dev.options, dev.is_swap, dev.mount_point) == \
        (0, 4096 * MiB, "min(ram / 2, 4096)", "lz4", 1, 0, 100, "discard", True, "")
    (small,) = config.load([write(tmp_path, "[ublkb1]\n")], ram=1000)
    assert small.size == 500 * MiB


def test_every_key(tmp_path):
    path = write(tmp_path, "# comment\n; another\n[ublkb3]\nsize = 1000\nalgorithm = zstd:3\n"
                           "queues = 1\nmem-limit = 256M\nswap-priority = -1\nfs-type = ext4\n"
                           "mount-point = //var/tmp//./scratch/\noptions = noatime\n")
    (dev,) = config.load([path], ram=RAM)
    assert (dev.name, dev.dev_id, dev.size, dev.algorithm, dev.queues, dev.mem_limit,
            dev.swap_priority) == ("ublkb3", 3, 1000 * MiB, "zstd:3", 1, 256 * MiB, -1)
    assert (dev.fs_type, dev.mount_point, dev.options, dev.is_swap) == \
        ("ext4", "/var/tmp/scratch", "noatime", False)


def test_inline_comments_and_spacing(tmp_path):
    path = write(tmp_path, "  [ublkb0]   # the swap\n"
                           "size=min(ram / 2, 4096)     # MiB\n"
                           "algorithm =   zstd   ; fast enough\n"
                           "swap-priority\t=\t5\n")
    (dev,) = config.load([path], ram=RAM)
    assert (dev.size, dev.algorithm, dev.swap_priority) == (4096 * MiB, "zstd", 5)


def test_fs_type_swap_means_swap(tmp_path):
    (dev,) = config.load([write(tmp_path, "[ublkb0]\nfs-type = swap\n")], ram=RAM)
    assert dev.is_swap and dev.fs_type == ""


@pytest.mark.parametrize("body, line, message", [
    ("[ublkb0]\nsise = 1\n", 2, "unknown key 'sise' in [ublkb0]"),
    ("[ublkb0]\n\nalgorithm = lzo\n", 3, "unknown algorithm 'lzo' in [ublkb0]"),
    ("[ublkb0]\nalgorithm = zstd:99\n", 2, "unknown zstd level '99'"),
    ("[ublkb0]\nalgorithm =\n", 2, "unknown algorithm ''"),
    ("[ublkb0]\nqueues = 0\n", 2, "queues must be a whole number from 1 to"),
    ("[ublkb0]\nqueues = two\n", 2, "queues must be a whole number"),
    ("[ublkb0]\nqueues = 1.5\n", 2, "queues must be a whole number"),
    (f"[ublkb0]\nqueues = {(os.cpu_count() or 1) + 1}\n", 2, "(the CPU count)"),
    ("[ublkb0]\nmem-limit = lots\n", 2, "'lots' is not a size"),
    ("[ublkb0]\nmem-limit = -1G\n", 2, "is not a size"),
    ("[ublkb0]\nswap-priority = 40000\n", 2, "swap-priority must be a whole number from -1 to 32767"),
    ("[ublkb0]\nswap-priority = -2\n", 2, "swap-priority must be"),
    ("[ublkb0]\nswap-priority = high\n", 2, "swap-priority must be"),
    ("[ublkb0]\nsize = ram - ram\n", 2,
     "size 'ram - ram' comes to 0 MiB in [ublkb0]: it must be at least 4K"),
    ("[ublkb0]\nsize = 0.001\n", 2, "it must be at least 4K"),
    ("[ublkb0]\nsize = ram * 1e12\n", 2, "it must be at most 64T (64 TiB)"),
    ("[ublkb0]\nsize = 4G\n", 2, "not a size expression"),
    ("[ublkb0]\nsize = __import__('os')\n", 2, "is not allowed in a size"),
    ("[ublkb0]\nfs-type = ext4\n", 2, "has fs-type ext4 but no mount-point"),
    ("[ublkb0]\nmount-point = /mnt\n", 2, "has a mount-point but no filesystem fs-type"),
    ("[ublkb0]\nfs-type = swap\nmount-point = /mnt\n", 3, "has a mount-point but no filesystem"),
    ("[ublkb0]\nfs-type = ext4\nmount-point = relative/dir\n", 3, "must be an absolute path"),
    ("[ublkb0]\nfs-type = ext4\nmount-point = //\n", 3, "cannot be / itself"),
    ("[ublkb0]\nfs-type = ext4;rm\nmount-point = /mnt\n", 2, "'ext4;rm' is not a filesystem type"),
    ("[ublkb0]\noptions =\n", 2, "options must be a non-empty list"),
    ("[ublkb0]\nrecompress-algorithm = none\n", 2, "the recompression algorithm cannot be none"),
    ("[ublkb0]\nrecompress-algorithm = lzo\n", 2, "unknown algorithm 'lzo'"),
    ("[ublkb0]\nrecompress-after = soon\n", 2, "recompress-after must be a duration like 300"),
    ("[ublkb0]\nrecompress-after = -5\n", 2, "recompress-after must be a duration"),
    ("[ublkb0]\nrecompress-after = 5y\n", 2, "recompress-after must be a duration"),
    ("[ublkb0]\nrecompress-after = 99999999999\n", 2, "at most 4294967295 seconds"),
    ("[ublkb0]\nentropy-threshold = 9\n", 2, "entropy-threshold must be a number of bits a byte from 0"),
    ("[ublkb0]\nentropy-threshold = nan\n", 2, "entropy-threshold must be"),
    ("[ublkb0]\nentropy-threshold = high\n", 2, "entropy-threshold must be"),
    ("[ublkb0]\notlp-endpoint = 127.0.0.1:4318\n", 2,
     "otlp-endpoint in [ublkb0]: '127.0.0.1:4318' is not an http:// or https:// URL"),
    ("[ublkb0]\notlp-interval = 0\n", 2, "otlp-interval must be at least 1 second"),
    ("[ublkb0]\nwriteback-device = sdb1\n", 2, "writeback-device must be an absolute path, not 'sdb1'"),
    ("[ublkb0]\nwriteback-after = later\n", 2, "writeback-after must be a duration like 300"),
    ("[ublkb0]\nwriteback-limit = lots\n", 2, "lots"),
    ("[ublkb0]\nbackend = zram\n", 2, "unknown key 'backend'"),
    ("[ublkb0]\nzram-entropy = 6\n", 2, "zram-entropy goes with zram-device in [ublkb0]"),
    ("[ublkb0]\nzram-device = /dev/zram1\nzram-entropy = 0\n", 3, "zram-entropy must be above 0"),
    ("[ublkb0]\nzram-device = zram1\n", 2, "zram-device must be a device path like /dev/zram0"),
    ("[ublkb0]\nwriteback-limit = 1G\n", 2, "writeback-limit goes with writeback-device in [ublkb0]"),
    (f"[ublkb0]\nsize = {(64 << 20) + 1}\n", 2, "it must be at most 64T"),
    ("[ublkb0]\nzram-entropy = 9\n", 2, "zram-entropy must be a number of bits a byte from 0"),
    ("[ublkb0]\nsize\n", 2, "expected 'key = value', got 'size'"),
    ("[ublkb0]\n= 5\n", 2, "expected 'key = value'"),
    ("[ublkb0]\nsize = 1\nsize = 2\n", 3, "'size' is set twice in [ublkb0]"),
    ("[ublkb0]\nsize = 1\n[ublkb9]\n[ublkb0]\nsize = 2\n", 5, "'size' is set twice"),
])
def test_key_errors_carry_file_and_line_and_drop_the_device(tmp_path, body, line, message):
    path = write(tmp_path, body + "[ublkb9]\nsize = 64\n")     # a good device beside it
    devices, errors = config.load_all_errors([path], ram=RAM)
    assert [d.name for d in devices] == ["ublkb9"]
    assert len(errors) == 1 and errors[0].section == "ublkb0", errors
    assert str(errors[0]).startswith(f"{path}:{line}: ") and message in str(errors[0]), errors


@pytest.mark.parametrize("body, line, message", [
    ("[zram0]\nsize = 1\n", 1, "bad section [zram0]: use [ublkbN]"),
    ("[ublkb01]\n", 1, "bad section [ublkb01]"),
    ("[ublkb1048576]\n", 1, "N from 0 to 1048575"),
    ("[ublkb0\n", 1, "bad section [ublkb0:"),
    ("[]\n", 1, "bad section []"),
    ("size = 1\n", 1, "'size' is outside any [ublkbN] section"),
])
def test_section_errors(tmp_path, body, line, message):
    path = write(tmp_path, body)
    devices, errors = config.load_all_errors([path], ram=RAM)
    assert devices == [] and len(errors) == 1 and errors[0].section is None, errors
    assert str(errors[0]).startswith(f"{path}:{line}: ") and message in str(errors[0]), errors


def test_the_keys_of_a_bad_section_are_not_reported_again(tmp_path):
    path = write(tmp_path, "[zram0]\nsize = 1\nsise = 2\n[ublkb0]\nsize = 64\n")
    devices, errors = config.load_all_errors([path], ram=RAM)
    assert [d.name for d in devices] == ["ublkb0"] and len(errors) == 1


def test_every_error_is_reported_not_just_the_first(tmp_path):
    path = write(tmp_path, "[ublkb0]\nsize = x\nqueues = 0\n[ublkb1]\nalgorithm = lzo\n")
    devices, errors = config.load_all_errors([path], ram=RAM)
    assert devices == []
    assert [str(e).split(": ")[0] for e in errors] == [f"{path}:2", f"{path}:3", f"{path}:5"]
    with pytest.raises(config.ConfigError, match=f"^{path}:2: "):
        config.load([path], ram=RAM)


def test_mount_points_are_not_shared(tmp_path):
    path = write(tmp_path, "[ublkb0]\nfs-type = ext4\nmount-point = /mnt/a\n"
                           "[ublkb1]\nfs-type = xfs\nmount-point = /mnt//a/\n")
    devices, errors = config.load_all_errors([path], ram=RAM)
    assert [d.name for d in devices] == ["ublkb0"]
    assert [str(e) for e in errors] == [f"{path}:6: mount-point /mnt/a is already [ublkb0]'s"]


def test_unreadable_files_are_errors_without_a_line(tmp_path):
    binary = write(tmp_path, "", "binary.conf")
    binary.write_bytes(b"[ublkb0]\nsize = \xff\xfe\n")
    devices, errors = config.load_all_errors([binary, tmp_path / "absent.conf"], ram=RAM)
    assert devices == [] and len(errors) == 2
    assert str(errors[0]).startswith(f"{binary}: cannot read: ")
    assert str(errors[1]) == f"{tmp_path / 'absent.conf'}: cannot read: No such file or directory"


# --- files ---------------------------------------------------------------------

def test_drop_ins_override_per_key_in_name_order(tmp_path):
    main = write(tmp_path, "[ublkb0]\nsize = 1024\nalgorithm = zstd\n")
    write(tmp_path, "[ublkb0]\nsize = 2048\n", "trueno-ublk.conf.d/20-size.conf")
    write(tmp_path, "[ublkb0]\nsize = 512\nqueues = 1\n[ublkb1]\n", "trueno-ublk.conf.d/10-first.conf")
    write(tmp_path, "[ublkb0]\nsize = 1\n", "trueno-ublk.conf.d/99-not-a-conf.txt")
    files = config.config_files(main)
    assert [f.name for f in files] == ["trueno-ublk.conf", "10-first.conf", "20-size.conf"]
    dev0, dev1 = config.load(files, ram=RAM)
    assert (dev0.size, dev0.algorithm, dev0.queues, dev1.name) == (2048 * MiB, "zstd", 1, "ublkb1")


def test_the_same_key_in_two_files_is_an_override_not_a_duplicate(tmp_path):
    main = write(tmp_path, "[ublkb0]\nswap-priority = 1\n")
    write(tmp_path, "[ublkb0]\nswap-priority = 2\n", "trueno-ublk.conf.d/a.conf")
    (dev,) = config.load(config.config_files(main), ram=RAM)
    assert dev.swap_priority == 2


def test_a_drop_in_error_points_at_the_drop_in(tmp_path):
    main = write(tmp_path, "[ublkb0]\nsize = 1024\n")
    drop_in = write(tmp_path, "# override\n[ublkb0]\nsize = lots\n", "trueno-ublk.conf.d/50-x.conf")
    with pytest.raises(config.ConfigError, match=f"^{drop_in}:3: "):
        config.load(config.config_files(main), ram=RAM)


def test_drop_ins_without_a_main_file(tmp_path):
    drop_in = write(tmp_path, "[ublkb4]\n", "trueno-ublk.conf.d/x.conf")
    assert config.config_files(tmp_path / "trueno-ublk.conf") == [drop_in]


def test_the_environment_names_the_main_file(tmp_path, monkeypatch):
    main = write(tmp_path, "[ublkb0]\n", "elsewhere.conf")
    drop_in = write(tmp_path, "[ublkb0]\n", "elsewhere.conf.d/1.conf")
    monkeypatch.setenv("TRUENO_UBLK_CONFIG", str(main))
    assert config.config_files() == [main, drop_in]
    monkeypatch.delenv("TRUENO_UBLK_CONFIG")
    assert config.main_file() == Path("/etc/trueno-ublk.conf")


def test_section_for_ignores_problems_of_other_devices(tmp_path):
    path = write(tmp_path, "[ublkb0]\nsize = 64\n[ublkb1]\nsise = 1\n[zram0]\n")
    assert config.section_for("ublkb0", [path], ram=RAM).size == 64 * MiB
    with pytest.raises(config.ConfigError, match=f"^{path}:4: unknown key 'sise' in \\[ublkb1\\]$"):
        config.section_for("ublkb1", [path], ram=RAM)
    with pytest.raises(ValueError, match=f"^no \\[ublkb2\\] section in {path}$"):
        config.section_for("ublkb2", [path], ram=RAM)


# --- config check --------------------------------------------------------------

def run(*args, env=None):
    result = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=60,
                            env={**os.environ, **(env or {})})
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_config_check_good_file(tmp_path):
    good = write(tmp_path, "[ublkb0]\nsize = 1536\nmem-limit = 1G\nalgorithm = zstd\n"
                           "[ublkb2]\nsize = ram * 0 + 64\nfs-type = ext4\nmount-point = /mnt/x\n"
                           "recompress-algorithm = lz4hc\nrecompress-after = 2h\nentropy-threshold = 0\n"
                           "otlp-endpoint = http://127.0.0.1:4318\n"
                           "[ublkb5]\n")
    result = run("config", "check", str(good))
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.splitlines() == [
        f"{good}: OK, 3 device(s)",
        "  ublkb0: size 1.5G (1536), zstd, 1 queue(s), mem-limit 1G, swap, priority 100, "
        "options discard; recompress zstd:6 after 120s, entropy threshold 7.5",
        "  ublkb2: size 64M (ram * 0 + 64), lz4, 1 queue(s), ext4 on /mnt/x, options discard; "
        "recompress lz4hc after 7200s, entropy threshold 0; OTLP to http://127.0.0.1:4318 every 60s",
        "  ublkb5: size " + result.stdout.splitlines()[3].split("size ")[1],
    ]
    assert result.stdout.splitlines()[3].split(" (")[1].startswith("min(ram / 2, 4096)), lz4")


def test_config_check_bad_file(tmp_path):
    bad = write(tmp_path, "[ublkb0]\nsize = ram ** 2\nqueues = x\n[ublkb1]\n", "bad.conf")
    result = run("config", "check", str(bad))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"trueno-ublk: {bad}:2: 'ram ** 2' is not allowed in a size "
        "(use numbers, ram, + - * / //, parentheses, min(), max()) in [ublkb0]",
        f"trueno-ublk: {bad}:3: queues must be a whole number from 1 to {os.cpu_count()} "
        "(the CPU count), not 'x' in [ublkb0]",
    ]


def test_config_check_default_files_from_the_environment(tmp_path):
    main = write(tmp_path, "[ublkb0]\n")
    drop_in = write(tmp_path, "[ublkb0]\nswap-priority = 7\n", "trueno-ublk.conf.d/a.conf")
    result = run("config", "check", env={"TRUENO_UBLK_CONFIG": str(main)})
    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == f"{main}, {drop_in}: OK, 1 device(s)"
    assert "priority 7" in result.stdout
    write(tmp_path, "[ublkb0]\nswap-priority = x\n", "trueno-ublk.conf.d/b.conf")
    result = run("config", "check", env={"TRUENO_UBLK_CONFIG": str(main)})
    assert result.returncode == 1 and "b.conf:2: swap-priority must be" in result.stderr


def test_config_check_missing_file(tmp_path):
    result = run("config", "check", str(tmp_path / "nope"))
    assert result.returncode == 1
    assert result.stderr == f"trueno-ublk: {tmp_path / 'nope'}: no such file\n"


# --- create --from-config ------------------------------------------------------

@pytest.fixture
def create(monkeypatch):
    """`create ARGS` up to the point where a device would be made: returns
    the DeviceConfig it would be made with, or raises the UserError."""
    made = []
    monkeypatch.setattr(options, "require_root", lambda: None)
    # The CLI imports these where a command runs: patch them where they live.
    monkeypatch.setattr(control, "require_control_device", lambda: None)
    monkeypatch.setattr(records, "load", lambda dev_id: None)
    monkeypatch.setattr(detach, "spawn_detached", lambda cfg: made.append(cfg) or max(cfg.dev_id, 0))

    def run_create(*args):
        result = CliRunner().invoke(cli.cli, ["create", *args])
        if result.exception is not None:
            raise result.exception
        return made.pop()
    return run_create


def test_create_from_config_takes_the_section(tmp_path, create):
    path = write(tmp_path, "[ublkb3]\nsize = 256\nalgorithm = zstd\nmem-limit = 64M\nqueues = 1\n")
    made = create("--from-config", "ublkb3", "--config-file", str(path))
    assert (made.dev_id, made.size, made.algorithm, made.queues, made.mem_limit) == \
        (3, 256 * MiB, "zstd", 1, 64 * MiB)
    assert made.format_command == ("/sbin/mkswap", "/dev/ublkb3")     # a new device, before it is ready


def test_create_formats_what_the_config_says_and_nothing_by_hand(tmp_path, create):
    path = write(tmp_path, "[ublkb2]\nfs-type = ext4\nmount-point = /srv/scratch\n")
    made = create("--from-config", "ublkb2", "--config-file", str(path))
    assert made.format_command == ("/sbin/mkfs", "-t", "ext4", "/dev/ublkb2")
    assert create("--size", "64M").format_command == ()


def test_create_from_config_takes_otlp_export(tmp_path, create):
    path = write(tmp_path, "[ublkb3]\notlp-endpoint = http://[::1]:4318\notlp-interval = 2m\n")
    made = create("--from-config", "ublkb3", "--config-file", str(path))
    assert (made.otlp_endpoint, made.otlp_interval) == ("http://[::1]:4318", 120)
    made = create("--from-config", "ublkb3", "--config-file", str(path), "--otlp-interval", "5")
    assert (made.otlp_endpoint, made.otlp_interval) == ("http://[::1]:4318", 5)


def test_create_from_config_takes_the_zram_tier(tmp_path, create, monkeypatch):
    monkeypatch.setattr(backing, "open_zram", lambda path: (os.open(os.devnull, os.O_RDONLY), 1 << 30, "zram1"))
    path = write(tmp_path, "[ublkb3]\nsize = 256\nzram-device = /dev/zram1\nzram-entropy = 5\n")
    made = create("--from-config", "ublkb3", "--config-file", str(path))
    assert (made.zram_device, made.zram_entropy) == ("/dev/zram1", 5.0)
    made = create("--from-config", "ublkb3", "--config-file", str(path), "--zram-entropy", "8")
    assert (made.zram_device, made.zram_entropy) == ("/dev/zram1", 8.0)       # every page
    path = write(tmp_path, "[ublkb3]\nsize = 256\nzram-device = /dev/zram1\n")
    assert create("--from-config", "ublkb3", "--config-file", str(path)).zram_entropy == 8.0     # by default


def test_create_options_given_win_over_the_config(tmp_path, create):
    path = write(tmp_path, "[ublkb3]\nsize = 256\nalgorithm = zstd\nmem-limit = 64M\n")
    made = create("--from-config", "ublkb3", "--config-file", str(path),
                  "--size", "128M", "-a", "lz4", "--mem-limit", "0", "--id", "5")
    assert (made.dev_id, made.size, made.algorithm, made.mem_limit) == (5, 128 * MiB, "lz4", 0)


def test_create_from_the_default_files(tmp_path, create, monkeypatch):
    main = write(tmp_path, "[ublkb1]\nsize = 64\n")
    write(tmp_path, "[ublkb1]\nalgorithm = lz4hc\n", "trueno-ublk.conf.d/a.conf")
    monkeypatch.setenv("TRUENO_UBLK_CONFIG", str(main))
    made = create("--from-config", "ublkb1")
    assert (made.dev_id, made.size, made.algorithm) == (1, 64 * MiB, "lz4hc")


@pytest.mark.parametrize("args, message", [
    ((), "missing --size (e.g. --size 8G), or --from-config NAME"),
    (("--config-file", "x.conf", "--size", "1G"), "--config-file goes with --from-config NAME"),
    (("--from-config", "zram0"), "'zram0' is not a config section name: use ublkbN"),
    (("--from-config", "ublkb0", "--config-file", "/nonexistent.conf"), "/nonexistent.conf: no such file"),
])
def test_create_from_config_errors(create, args, message):
    with pytest.raises(UserError) as error:
        create(*args)
    assert str(error.value) == message


def test_create_otlp_bad_input(create):
    with pytest.raises(UserError, match="--otlp-endpoint: 'ftp://collector' is not an http"):
        create("--size", "1G", "--otlp-endpoint", "ftp://collector")
    result = CliRunner().invoke(cli.cli, ["create", "--size", "1G", "--otlp-interval", "0"])
    assert result.exit_code == 2 and "otlp-interval must be at least 1 second" in result.output


def test_create_from_config_reports_the_line(tmp_path, create):
    path = write(tmp_path, "[ublkb0]\nsize = 64\n[ublkb1]\n\nqueues = 0\n")
    with pytest.raises(UserError, match=f"^{path}:5: queues must be"):
        create("--from-config", "ublkb1", "--config-file", str(path))
    assert create("--from-config", "ublkb0", "--config-file", str(path)).size == 64 * MiB
    with pytest.raises(UserError, match=f"^no \\[ublkb7\\] section in {path}$"):
        create("--from-config", "ublkb7", "--config-file", str(path))


def test_config_check_without_any_file(tmp_path):
    result = run("config", "check", env={"TRUENO_UBLK_CONFIG": str(tmp_path / "absent.conf")})
    assert result.returncode == 0
    assert result.stdout == f"{tmp_path / 'absent.conf'} (absent): OK, 0 device(s)\n"
