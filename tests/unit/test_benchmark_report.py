"""The device benchmark's reports, drawn from a real run's JSON
(data/benchmark-report.json: `trueno-ublk benchmark --size 64M --runtime 2
--repeats 1 --format json` in a 6.12 guest), the HTML looked at in a real
browser, and how a device is filled. The measuring itself runs in
tests/integration/test_benchmark.py."""
import copy
import html.parser
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from trueno_ublk.benchmark import device, html_report

from one_line_error import assert_one_line_error

REPORT = json.loads((Path(__file__).parent / "data" / "benchmark-report.json").read_text())
CHROMIUM = shutil.which("chromium")


def run_command(*args):
    return subprocess.run([sys.executable, "-m", "trueno_ublk", "benchmark", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("sample_pages", [1, 3, 256, 257, 1024])
def test_fill_repeats_the_sample_over_the_device(tmp_path, sample_pages):
    sample = bytes(range(256)) * 16 * sample_pages
    sample = bytes(b ^ (i // 4096 % 251) for i, b in enumerate(sample))     # each page its own
    target = tmp_path / "device"
    size = 5 * device.FILL_CHUNK + 4096
    target.write_bytes(bytes(size))
    device.fill(str(target), device.Data("own", "file", sample, "", 0), size)
    assert target.read_bytes() == (sample * (size // len(sample) + 1))[:size]


def test_ratios_are_over_the_same_runs_baseline():
    doc = copy.deepcopy(REPORT)
    zram, trueno = doc["targets"]
    for cell in trueno["workloads"]:
        del cell["iops_vs_baseline"]
    zram["workloads"][0]["iops"]["value"] = 1000.0
    trueno["workloads"][0]["iops"]["value"] = 1500.0
    zram["memory"]["held"]["value"] = 0.0               # zero pages: zram holds nothing
    device.add_ratios(doc["targets"])
    assert trueno["workloads"][0]["iops_vs_baseline"] == {"value": 1.5, "unit": "x"}
    assert trueno["memory"]["held_vs_baseline"] == {"value": None, "unit": "x"}
    assert "iops_vs_baseline" not in zram["workloads"][0]
    doc["targets"] = [trueno]                           # its baseline not measured: no ratios
    device.add_ratios(doc["targets"])
    assert trueno["baseline"] is None


def test_text_report_has_every_cell_and_ratio():
    text = device.render_text(REPORT)
    lines = text.splitlines()
    assert "kernel 6.12" in lines[0] and "x zram" in lines[1]
    rows = [line.split() for line in lines if line.startswith("trueno-ublk lz4 ")]
    assert len(rows) == len(device.WORKLOADS) + 1
    trueno = REPORT["targets"][1]
    for row, cell in zip(rows, trueno["workloads"], strict=False):
        assert row[-1] == f"{cell['iops_vs_baseline']['value']:.2f}x"
        assert int(row[-4]) == round(cell["iops"]["value"])
    assert rows[-1][-1] == f"{trueno['memory']['held_vs_baseline']['value']:.2f}x"


class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.sources = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.sources += [value for name, value in attrs if name in ("src", "href") and value]


def test_html_is_self_contained():
    page = Page()
    page.feed(html_report.render(REPORT))
    assert page.tags.count("svg") == 3 and "table" in page.tags
    assert page.sources == []                   # nothing fetched: no scripts, links or images
    assert "script" not in page.tags and "link" not in page.tags


def test_html_escapes_what_it_shows():
    doc = copy.deepcopy(REPORT)
    doc["parameters"]["data"]["name"] = "<b>my file</b>"
    page = html_report.render(doc)
    assert "<b>my file</b>" not in page and "&lt;b&gt;my file&lt;/b&gt;" in page


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (scripts/setup installs it)")
def test_html_renders_its_charts_in_a_browser(tmp_path):
    page = tmp_path / "report.html"
    page.write_text(html_report.render(REPORT))
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,1800",
                    f"--screenshot={shot}", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    image = Image.open(shot).convert("RGB")
    assert image.size == (1000, 1800)
    colors = image.getcolors(maxcolors=1 << 20)
    count = {rgb: n for n, rgb in colors}

    def hex_rgb(text):
        return tuple(int(text[i:i + 2], 16) for i in (1, 3, 5))
    # The bars of both targets, and the caveat's background, were drawn.
    for color in (html_report.COLORS[0], html_report.COLORS[1], "#fff6d6"):
        assert count.get(hex_rgb(color), 0) > 2000, color
    # Lots of white page, and dark text on it.
    assert count.get((255, 255, 255), 0) > image.size[0] * image.size[1] // 3
    assert sum(n for n, rgb in colors if max(rgb) < 80) > 5000


@pytest.mark.parametrize("args, why", [
    (["--data", "/nonexistent"], "--data is zero, text, mixed, random or a readable file"),
    (["--size", "3K"], "--size must be a multiple of 4K"),
    (["--queues", "0"], "--queues must be"),
    (["--format", "pdf"], "'pdf' is not one of"),
    (["--repeats", "0"], "--repeats"),
    (["--output", "/nonexistent/report.html"], "cannot write /nonexistent/report.html"),
    (["--size", "1M", "codecs"], "--size belong(s) to the device benchmark"),
])
def test_bad_input_is_one_line(args, why):
    assert_one_line_error(run_command(*args), why)
