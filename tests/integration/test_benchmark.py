"""`trueno-ublk benchmark`: the installed command measures a scratch device
and kernel zram with fio, reports every figure, and leaves no device behind."""
import json
import os
import subprocess

import pytest

from trueno_ublk.benchmark import device

from conftest import CLI, run_cli
from one_line_error import assert_one_line_error

pytestmark = pytest.mark.same_on_every_kernel

SHORT = ("--size", "16M", "--runtime", "1", "--repeats", "1")


def figures(node):
    """Every {"value", "unit"} figure in a report, anywhere."""
    if isinstance(node, dict):
        if set(node) == {"value", "unit"}:
            yield node
        else:
            for value in node.values():
                yield from figures(value)
    elif isinstance(node, list):
        for value in node:
            yield from figures(value)


def ublk_devices() -> set[str]:
    return {name for name in os.listdir("/dev") if name.startswith("ublkb")}


def test_json_report_against_kernel_zram(tmp_path):
    before = ublk_devices()
    out = tmp_path / "report.json"
    run_cli("benchmark", *SHORT, "--data", "text", "--format", "json", "--output", out, timeout=600)
    doc = json.loads(out.read_text())
    assert (doc["schema"], doc["version"]) == (device.SCHEMA, device.SCHEMA_VERSION)
    assert doc["skipped"] == []
    zram, trueno = doc["targets"]
    assert (zram["kind"], trueno["kind"], trueno["baseline"]) == ("zram", "trueno", zram["name"])
    for target in doc["targets"]:
        assert [c["name"] for c in target["workloads"]] == list(device.WORKLOADS)
        assert all(c["iops"]["value"] > 0 and c["bandwidth"]["value"] > 0 for c in target["workloads"])
        # Both held the whole device of text: about 2:1, so less than the data.
        memory = target["memory"]
        assert memory["stored"]["value"] == 16.0
        assert 0 < memory["compressed"]["value"] < memory["stored"]["value"]
        assert memory["held"]["value"] > 0
    assert all(c["iops_vs_baseline"]["value"] > 0 for c in trueno["workloads"])
    assert trueno["memory"]["held_vs_baseline"]["value"] > 0
    assert doc["parameters"]["data"]["fio_compressible"]["value"] > 30      # text compresses
    assert all(f["unit"] and (f["value"] is None or f["value"] >= 0) for f in figures(doc))
    assert ublk_devices() == before             # the scratch device is gone


def test_text_report_on_a_file_without_zram(tmp_path):
    own = tmp_path / "own"
    own.write_bytes(os.urandom(3 * 4096 + 100))           # smaller than a fill chunk: three pages repeated
    result = run_cli("benchmark", *SHORT, "--data", own, "--no-zram", "--algorithm", "zstd", timeout=600)
    lines = result.stdout.splitlines()
    rows = [line for line in lines if line.startswith("trueno-ublk zstd")]
    assert len(rows) == len(device.WORKLOADS) + 1          # a row a workload, and the memory row
    assert not any(line.startswith("kernel zram") for line in lines)
    assert "no ratios" in lines[1]
    assert "data own" in lines[0]


def test_html_report_is_one_file(tmp_path):
    out = tmp_path / "report.html"
    run_cli("benchmark", *SHORT, "--data", "zero", "--no-zram", "--format", "html", "-o", out, timeout=600)
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 2     # IOPS and memory: no ratios
    assert "trueno-ublk lz4" in page and "kernel zram lz4" not in page


def test_bad_output_and_a_missing_fio_fail_before_measuring(tmp_path):
    assert_one_line_error(run_cli("benchmark", "--output", "/nonexistent/dir/report.html", check=False),
                          "cannot write /nonexistent/dir/report.html")
    result = subprocess.run([CLI, "benchmark", "--data", "zero"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PATH": str(tmp_path)})
    assert_one_line_error(result, "fio, which is not installed")
