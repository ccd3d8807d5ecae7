"""Watching devices: top in a real terminal, metrics text and HTTP."""
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from trueno_ublk.devices import records

from conftest import CLI, run_cli, sh
from otlp_receiver import Receiver, decoded

pytestmark = pytest.mark.same_on_every_kernel


def tmux(*args, check=True) -> subprocess.CompletedProcess:
    # A private server, so a user's tmux (or a stale socket) is never touched;
    # no LINES/COLUMNS (pytest exports 24x80), which curses would trust over the pane.
    env = {k: v for k, v in os.environ.items() if k not in ("LINES", "COLUMNS")}
    return subprocess.run(["tmux", "-L", "trueno-test", *args], capture_output=True, text=True,
                          check=check, env=env)


def test_top_in_a_terminal_shows_devices_and_quits_on_q(make_device):
    dev = make_device()
    sh(f"dd if=/dev/urandom of={dev} bs=1M count=8 oflag=direct status=none")
    session = "trueno-top"
    tmux("new-session", "-d", "-s", session, "-x", "160", "-y", "30", f"{CLI} top --interval 0.5")
    try:
        deadline = time.monotonic() + 120       # deadlines only a hang reaches
        while "ublkb" not in (screen := tmux("capture-pane", "-p", "-t", session).stdout):
            assert time.monotonic() < deadline, screen
            time.sleep(0.3)
        line = next(row for row in screen.splitlines() if dev.removeprefix("/dev/") in row)
        assert "live" in line and "/128" in line and "q0" in line, screen
        assert "DEVICE" in screen and "q quits" in screen
        tmux("send-keys", "-t", session, "q")
        deadline = time.monotonic() + 60
        while tmux("has-session", "-t", session, check=False).returncode == 0:
            assert time.monotonic() < deadline, "top did not quit on q"
            time.sleep(0.2)
    finally:
        tmux("kill-server", check=False)


def test_top_once_and_without_a_terminal(device):
    sh(f"dd if=/dev/zero of={device} bs=1M count=1 oflag=direct status=none")
    sh(f"dd if=/dev/urandom of={device} bs=1M count=1 seek=1 oflag=direct status=none")
    out = run_cli("top", "--once", "--interval", "0.2", device).stdout
    assert out.splitlines()[0].startswith("DEVICE") and "live" in out
    name = device.removeprefix("/dev/")
    # 256 zero pages (same-filled, never sampled), 256 random ones (stored raw on their entropy)
    assert f"{name:<12}tiers: same 50% 0B | fast 0% 0B | raw 50% 1M" in out
    assert f"{name:<12}entropy of pages written, bits a byte: 0-1 0% " in out and " 7-8 100%" in out
    result = run_cli("top", device, check=False)
    assert result.returncode != 0 and "--once" in result.stderr


def test_metrics_text_after_a_known_write(device):
    sh(f"dd if=/dev/zero of={device} bs=1M count=4 oflag=direct status=none")
    name = device.removeprefix("/dev/")
    text = run_cli("metrics").stdout
    assert f'trueno_ublk_up{{device="{name}"}} 1' in text
    assert f'trueno_ublk_written_bytes_total{{device="{name}"}} {4 << 20}' in text
    assert f'trueno_ublk_same_pages{{device="{name}"}} 1024' in text
    assert "# TYPE trueno_ublk_reads_total counter" in text


def test_metrics_over_http(make_device):
    dev = make_device("--metrics-listen", "127.0.0.1:19851")
    sh(f"dd if=/dev/urandom of={dev} bs=64k count=16 oflag=direct status=none")
    with urllib.request.urlopen("http://127.0.0.1:19851/metrics", timeout=10) as reply:
        text = reply.read().decode()
    assert f'trueno_ublk_written_bytes_total{{device="{dev.removeprefix("/dev/")}"}} {1 << 20}' in text
    for bad in ("19851", "127.0.0.1:99999", "example.com:80"):
        result = run_cli("create", "--size", "64M", "--metrics-listen", bad, check=False)
        assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1
    taken = run_cli("create", "--size", "64M", "--metrics-listen", "127.0.0.1:19851", check=False)
    assert taken.returncode != 0 and "cannot serve metrics" in taken.stderr
    assert Path(dev).exists()


def test_otlp_export_from_the_daemon(make_device):
    with Receiver() as receiver:
        dev = make_device("--otlp-endpoint", receiver.url, "--otlp-interval", "1")
        name = dev.removeprefix("/dev/")
        sh(f"dd if=/dev/urandom of={dev} bs=64k count=16 oflag=direct status=none")
        deadline = time.monotonic() + 180
        while True:         # the exports before the write may come first
            resource, found = decoded(receiver.wait(len(receiver.requests) + 1, 120)[-1])
            written = found["trueno_ublk_written_bytes"][2][(("device", name),)]
            if written == 1 << 20 or time.monotonic() > deadline:
                break
        assert written == 1 << 20
        assert resource["trueno_ublk.device"] == name and resource["service.name"] == "trueno-ublk"
        assert found["trueno_ublk_up"][2] == {(("device", name),): 1}
        # Its own process, a child of the supervisor, none of its memory locked.
        (record,) = [r for r in records.load_all() if f"ublkb{r.dev_id}" == name]
        exporter = exporter_of(record.pid)
        status = Path(f"/proc/{exporter}/status").read_text()
        assert "VmLck:\t       0 kB" in status, status
        assert Path(f"/proc/{exporter}/oom_score_adj").read_text().strip() == "0"
        count = len(receiver.requests)
        run_cli("delete", dev, timeout=30)
        assert not Path(f"/proc/{exporter}").exists()
        assert len(receiver.requests) > count           # the last export, as the device went


def exporter_of(supervisor: int) -> int:
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return next(int(c) for c in children if b"trueno_ublk.observe.otlp" in Path(f"/proc/{c}/cmdline").read_bytes())


def test_an_unreachable_collector_leaves_the_device_alone(make_device):
    # Port 9 on loopback: nobody listens, every export (one a second) is refused.
    dev = make_device("--otlp-endpoint", "http://127.0.0.1:9", "--otlp-interval", "1")
    log = records.log_path(int(dev.removeprefix("/dev/ublkb")))
    deadline, after_first = time.monotonic() + 180, None
    while after_first is None or time.monotonic() < after_first + 5:
        sh(f"dd if=/dev/urandom of=/tmp/otlp-page bs=1M count=4 status=none && "
           f"dd if=/tmp/otlp-page of={dev} bs=1M oflag=direct status=none && "
           f"cmp /tmp/otlp-page {dev} -n 4194304")
        if after_first is None and "OTLP export:" in log.read_text():
            after_first = time.monotonic()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.5)
    assert log.read_text().count("OTLP export:") == 1, log.read_text()     # one line a minute at most
    run_cli("delete", dev, timeout=30)
