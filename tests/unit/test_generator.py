"""The systemd generator against expected unit trees, one directory per
case (tests/unit/generator/CASE/{trueno-ublk.conf,expected/}), and the
units through systemd-analyze verify where it exists."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from trueno_ublk import config, generator

CASES = Path(__file__).with_name("generator")
TEMPLATE = Path(__file__).parents[2] / "systemd" / "trueno-ublk@.service"


def tree(root: Path) -> dict:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            out[rel] = path.read_text()
    return out


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir()))
def test_generated_units_match_expected(case, tmp_path):
    devices = config.load([CASES / case / "trueno-ublk.conf"], ram=8192)
    generator.generate(tmp_path, devices, "/etc/trueno-ublk.conf")
    assert tree(tmp_path) == tree(CASES / case / "expected")


@pytest.mark.parametrize("path, name", [
    ("/", "-"), ("/var/tmp/scratch", "var-tmp-scratch"), ("/mnt/a-b", r"mnt-a\x2db"),
    ("/srv/.cache", r"srv-.cache"), ("/x/.y", r"x-.y"), ("/.hidden", r"\x2ehidden"), ("/é", r"\xc3\xa9"),
])
def test_escape_path_like_systemd_escape(path, name):
    assert generator.escape_path(path) == name
    if shutil.which("systemd-escape"):
        assert subprocess.run(["systemd-escape", "--path", path], capture_output=True,
                              text=True).stdout.strip() == name


def test_generator_skips_broken_devices_and_never_fails(tmp_path, monkeypatch):
    conf = tmp_path / "trueno-ublk.conf"
    conf.write_text("[ublkb0]\nsize = 64\n[ublkb1]\nsise = 1\n")
    monkeypatch.setattr(config, "MAIN_FILE", conf)
    monkeypatch.setattr(config.config_files, "__defaults__", (conf,))
    out = tmp_path / "out"
    assert generator.main([str(out), str(tmp_path), str(tmp_path)]) == 0
    assert (out / "dev-ublkb0.swap").exists() and not (out / "dev-ublkb1.swap").exists()
    assert generator.main([]) == 2


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_units_pass_systemd_analyze_verify(tmp_path):
    devices = config.load([CASES / "fs-and-swap" / "trueno-ublk.conf"], ram=8192)
    generator.generate(tmp_path, devices, "/etc/trueno-ublk.conf")
    shutil.copy(TEMPLATE, tmp_path)
    # The template's ExecStart must exist for verify: point it at this checkout's CLI.
    cli = Path(os.environ.get("VIRTUAL_ENV", Path(__file__).parents[2] / ".venv")) / "bin" / "trueno-ublk"
    unit = tmp_path / TEMPLATE.name
    unit.write_text(unit.read_text().replace("/usr/local/bin/trueno-ublk", str(cli)))
    units = [str(tmp_path / n) for n in ("dev-ublkb0.swap", r"var-tmp-scratch\x20space.mount",
                                         "trueno-ublk@ublkb0.service")]
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *units], capture_output=True,
                            text=True, env={**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"})
    problems = [line for line in result.stderr.splitlines()
                if str(tmp_path) in line or "trueno" in line]
    assert result.returncode == 0 and not problems, result.stderr
