"""The systemd generator, run as systemd runs it, against expected trees:
one directory per case under tests/unit/generator/, like zram-generator's
test suite:

    CASE/trueno-ublk.conf        the main file
    CASE/trueno-ublk.conf.d/     drop-ins (optional)
    CASE/expected/               exactly the files and symlinks generated
    CASE/expected-log            what is logged, one problem a line (optional:
                                 none expected when it is absent)

The inputs are copied to a scratch /etc, whose path reads /etc in what is
compared. Where systemd-analyze exists, the units also pass its verify."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from trueno_ublk.systemd import generator

CASES = Path(__file__).with_name("generator")
TEMPLATE = Path(__file__).parents[2] / "systemd" / "trueno-ublk@.service"
CLI = Path(__file__).parents[2] / ".venv" / "bin" / "trueno-ublk"


def tree(root: Path) -> dict:
    """Relative path -> contents, or "-> target" for a symlink."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            out[rel] = path.read_text()
    return out


def run_generator(case: Path, tmp_path: Path, monkeypatch, capsys) -> tuple[Path, str]:
    """The case's config in a scratch etc/, the generator run on it as systemd
    does: (the normal output directory, stderr with etc/ shown as /etc)."""
    etc = tmp_path / "etc"
    etc.mkdir()
    shutil.copy(case / "trueno-ublk.conf", etc)
    if (case / "trueno-ublk.conf.d").is_dir():
        shutil.copytree(case / "trueno-ublk.conf.d", etc / "trueno-ublk.conf.d")
    monkeypatch.setenv("TRUENO_UBLK_CONFIG", str(etc / "trueno-ublk.conf"))
    monkeypatch.setattr(generator.config, "ram_mib", lambda: 8192.0)
    out = tmp_path / "normal"
    dirs = [out, tmp_path / "early", tmp_path / "late"]
    assert generator.main([str(d) for d in dirs]) == 0
    assert not dirs[1].exists() and not dirs[2].exists()
    for path in out.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.write_text(path.read_text().replace(str(etc), "/etc"))
    return out, capsys.readouterr().err.replace(str(etc), "/etc")


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir()))
def test_generated_units_match_expected(case, tmp_path, monkeypatch, capsys):
    out, log = run_generator(CASES / case, tmp_path, monkeypatch, capsys)
    assert tree(out) == tree(CASES / case / "expected")
    expected_log = CASES / case / "expected-log"
    assert log == (expected_log.read_text() if expected_log.exists() else "")


def test_every_case_has_an_expected_tree():
    for case in CASES.iterdir():
        assert (case / "expected").is_dir() or (case / "expected-log").is_file(), case


@pytest.mark.parametrize("path, name", [
    ("/", "-"), ("//", "-"), ("/var/tmp/scratch", "var-tmp-scratch"), ("/mnt/a-b", r"mnt-a\x2db"),
    ("/srv/.cache", r"srv-.cache"), ("/.hidden", r"\x2ehidden"), ("/é", r"\xc3\xa9"),
    ("//a//b/", "a-b"), ("/x/./y", "x-y"), ("/a b", r"a\x20b"), ("/foo:bar_baz", "foo:bar_baz"),
    ("/a\\b", r"a\x5cb"), ("/100%", r"100\x25"), ("/A.B/C~", r"A.B-C\x7e"),
])
def test_escape_path_like_systemd_escape(path, name):
    assert generator.escape_path(path) == name


@pytest.mark.skipif(not shutil.which("systemd-escape"), reason="systemd-escape is not installed")
@pytest.mark.parametrize("path", ["/var/tmp/scratch space", "/mnt/a-b", "/.x/.y", "/é/ü", "//a//b/",
                                  "/x/./y", "/a\\b:c_d", "/100%", "/tab\there"])
def test_escape_path_agrees_with_systemd_escape(path):
    systemd = subprocess.run(["systemd-escape", "--path", path], capture_output=True, text=True)
    assert generator.escape_path(path) == systemd.stdout.strip()


def test_a_section_a_zram_user_would_write_is_skipped_aloud(tmp_path, monkeypatch, capsys):
    conf = tmp_path / "trueno-ublk.conf"
    conf.write_text("[ublk0]\nsize = 64\n")
    monkeypatch.setenv("TRUENO_UBLK_CONFIG", str(conf))
    assert generator.main([str(tmp_path / "out")]) == 0
    assert not list((tmp_path / "out").glob("*.swap"))
    assert capsys.readouterr().err == (f"trueno-ublk-generator: {conf}:1: bad section [ublk0]: "
                                       "use [ublkbN], N from 0 to 1048575\n")


def test_the_generator_never_fails(tmp_path, monkeypatch, capsys):
    conf = tmp_path / "trueno-ublk.conf"
    conf.write_text("[ublkb0]\nsize = 64\n")
    monkeypatch.setenv("TRUENO_UBLK_CONFIG", str(conf))
    blocked = tmp_path / "a-file"
    blocked.write_text("")                      # the output "directory" cannot be made
    assert generator.main([str(blocked / "normal"), "early", "late"]) == 0
    assert capsys.readouterr().err.startswith("trueno-ublk-generator: cannot generate units: ")
    monkeypatch.setenv("TRUENO_UBLK_CONFIG", str(tmp_path / "absent.conf"))
    assert generator.main([str(tmp_path / "out")]) == 0
    assert not (tmp_path / "out").exists() and capsys.readouterr().err == ""


@pytest.mark.parametrize("argv", [[], ["a", "b"], ["a", "b", "c", "d"]])
def test_usage(argv, capsys):
    assert generator.main(argv) == 2
    assert capsys.readouterr().err.startswith("usage: trueno-ublk-generator NORMAL_DIR")


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir()))
def test_units_pass_systemd_analyze_verify(case, tmp_path, monkeypatch, capsys):
    out, _ = run_generator(CASES / case, tmp_path, monkeypatch, capsys)
    # The template beside the generated units; verify wants ExecStart= to
    # exist, so it points at this checkout's command instead of /usr/local/bin.
    unit = out / TEMPLATE.name
    unit.write_text(TEMPLATE.read_text().replace("/usr/local/bin/trueno-ublk", str(CLI)))
    units = [p for p in sorted(out.iterdir()) if p.suffix in (".swap", ".mount")]
    instances = [out / p.name.removesuffix(".d") for p in out.glob("trueno-ublk@*.service.d")]
    for instance in instances:                  # verify takes instance names as files
        instance.symlink_to(unit.name)
    assert len(instances) == len(units) > 0
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *map(str, units + instances)],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "SYSTEMD_UNIT_PATH": f"{out}:"})
    problems = [line for line in result.stderr.splitlines() if str(out) in line or "trueno" in line]
    assert result.returncode == 0 and not problems, result.stderr
