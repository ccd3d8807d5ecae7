"""Watching devices: top in a real terminal, metrics text and HTTP."""
import os
import subprocess
import time
import urllib.request
from pathlib import Path

from trueno_ublk import state

from conftest import CLI, run_cli, sh
from otlp_receiver import Receiver, decoded


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
        deadline = time.monotonic() + 30
        while "ublkb" not in (screen := tmux("capture-pane", "-p", "-t", session).stdout):
            assert time.monotonic() < deadline, screen
            time.sleep(0.3)
        line = next(row for row in screen.splitlines() if dev.removeprefix("/dev/") in row)
        assert "live" in line and "/128" in line and "q0" in line, screen
        assert "DEVICE" in screen and "q quits" in screen
        tmux("send-keys", "-t", session, "q")
        deadline = time.monotonic() + 15
        while tmux("has-session", "-t", session, check=False).returncode == 0:
            assert time.monotonic() < deadline, "top did not quit on q"
            time.sleep(0.2)
    finally:
        tmux("kill-server", check=False)


def test_top_once_and_without_a_terminal(device):
    sh(f"dd if=/dev/zero of={device} bs=1M count=1 oflag=direct status=none")
    out = run_cli("top", "--once", "--interval", "0.2", device).stdout
    assert out.splitlines()[0].startswith("DEVICE") and "live" in out
    name = device.removeprefix("/dev/")
    assert f"{name:<12}tiers: same 100% 0B | fast 0% 0B" in out          # 256 zero pages
    assert f"{name:<12}entropy of pages written, bits a byte: 0-1 100% 1-2 0%" in out
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
        deadline = time.monotonic() + 60
        while True:         # the exports before the write may come first
            resource, found = decoded(receiver.wait(len(receiver.requests) + 1)[-1])
            written = found["trueno_ublk_written_bytes"][2][(("device", name),)]
            if written == 1 << 20 or time.monotonic() > deadline:
                break
        assert written == 1 << 20
        assert resource["trueno_ublk.device"] == name and resource["service.name"] == "trueno-ublk"
        assert found["trueno_ublk_up"][2] == {(("device", name),): 1}


def test_an_unreachable_collector_leaves_the_device_alone(make_device):
    # Port 9 on loopback: nobody listens, every export is refused.
    dev = make_device("--otlp-endpoint", "http://127.0.0.1:9", "--otlp-interval", "1")
    for _ in range(4):
        sh(f"dd if=/dev/urandom of=/tmp/otlp-page bs=1M count=4 status=none && "
           f"dd if=/tmp/otlp-page of={dev} bs=1M oflag=direct status=none && "
           f"cmp /tmp/otlp-page {dev} -n 4194304")
        time.sleep(1)
    log = state.log_path(int(dev.removeprefix("/dev/ublkb"))).read_text()
    assert log.count("OTLP export:") == 1, log          # one line a minute at most
    run_cli("delete", dev, timeout=30)
