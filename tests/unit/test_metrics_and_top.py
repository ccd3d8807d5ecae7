"""Prometheus exposition, the metrics HTTP endpoint, and top's frames."""
import re
import socket
import urllib.error
import urllib.request

import pytest

from trueno_ublk.observe import metrics, metrics_server, top

STAT = {
    "device": {"dev_id": 0, "size": 1 << 30, "depth": 128, "recoveries": 1},
    "mm_stat": {"orig_data_size": 8 << 20, "compr_data_size": 2 << 20, "mem_used_total": 3 << 20,
                "mem_limit": 0, "mem_used_max": 4 << 20, "same_pages": 512, "pages_compacted": 0,
                "huge_pages": 256, "pages_stored": 2048, "notify_free": 7, "recompressed_pages": 128,
                "recompressed_bytes": 128 << 10, "frames": 8, "frame_pages": 32, "frame_bytes": 24 << 10,
                "recompressions": 130, "recompress_saved": 64 << 10,
                "idle_pages": 1024, "entropy_raw_pages": 250, "entropy_pages": [0, 1, 2, 3, 4, 5, 6, 250],
                "background_cpu_seconds": 0.25, "background_paused": 3},
    "io_stat": {"reads": 100, "writes": 200, "discards": 1, "flushes": 0, "failed_reads": 0,
                "failed_writes": 0, "invalid_io": 0, "read_bytes": 409600, "written_bytes": 8 << 20},
    "queues": [{"id": 0, "tid": 11, "inflight": 3, "cpu_seconds": 1.5},
               {"id": 1, "tid": 12, "inflight": 0, "cpu_seconds": 0.5}],
}
SAMPLE = re.compile(r'^([a-z_][a-z0-9_]*)\{((?:[a-z_]+="(?:[^"\\\n]|\\.)*",?)+)\} (-?[0-9.e+]+)$')


def parse(text: str) -> dict:
    """A strict reader of the 0.0.4 text format: every sample's family has
    HELP and TYPE lines first, counters end in _total, no duplicates."""
    types, samples = {}, {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in types and kind in ("gauge", "counter")
            assert name.endswith("_total") == (kind == "counter"), name
            types[name] = kind
            continue
        m = SAMPLE.match(line)
        assert m, f"bad sample line: {line!r}"
        assert m.group(1) in types, f"{m.group(1)} has no TYPE"
        key = (m.group(1), m.group(2))
        assert key not in samples
        samples[key] = float(m.group(3))
    return samples


def test_exposition_of_a_live_and_a_dead_device():
    samples = parse(metrics.render([("ublkb0", STAT), ("ublkb1", None)]))
    assert samples[("trueno_ublk_up", 'device="ublkb0"')] == 1
    assert samples[("trueno_ublk_up", 'device="ublkb1"')] == 0
    assert samples[("trueno_ublk_written_bytes_total", 'device="ublkb0"')] == 8 << 20
    assert samples[("trueno_ublk_mem_used_bytes", 'device="ublkb0"')] == 3 << 20
    assert samples[("trueno_ublk_queue_cpu_seconds_total", 'device="ublkb0",queue="1"')] == 0.5
    assert samples[("trueno_ublk_recompressions_total", 'device="ublkb0"')] == 130
    assert samples[("trueno_ublk_tier_pages", 'device="ublkb0",tier="recompressed"')] == 128 - 32
    assert samples[("trueno_ublk_tier_pages", 'device="ublkb0",tier="framed"')] == 32
    assert samples[("trueno_ublk_tier_bytes", 'device="ublkb0",tier="framed"')] == 24 << 10
    assert samples[("trueno_ublk_frames", 'device="ublkb0"')] == 8
    assert samples[("trueno_ublk_tier_pages", 'device="ublkb0",tier="fast"')] == 2048 - 512 - 256 - 128
    assert samples[("trueno_ublk_tier_bytes", 'device="ublkb0",tier="raw"')] == 256 * 4096
    assert samples[("trueno_ublk_tier_bytes", 'device="ublkb0",tier="fast"')] == (2 << 20) - (1 << 20) - (128 << 10)
    assert samples[("trueno_ublk_entropy_pages_total", 'device="ublkb0",bits="7-8"')] == 250
    assert not any(labels == 'device="ublkb1"' for name, labels in samples if name != "trueno_ublk_up")
    assert metrics.render([]) == ""


def test_label_values_are_escaped():
    text = metrics.render([('we"ird\\name\n', None)])
    assert 'device="we\\"ird\\\\name\\n"' in text
    parse(text)


@pytest.mark.parametrize("text, address", [
    (":9851", ("127.0.0.1", 9851)), ("0.0.0.0:80", ("0.0.0.0", 80)), ("[::1]:9", ("::1", 9)),
    ("localhost:1", ("localhost", 1)),
])
def test_addresses(text, address):
    assert metrics.parse_address(text) == address


@pytest.mark.parametrize("text", ["9851", ":0", ":65536", "host:", "example.com:80", ":x", "1.2.3:4"])
def test_bad_addresses(text):
    with pytest.raises(ValueError):
        metrics.parse_address(text)


def test_http_endpoint_answers_and_survives_bad_clients():
    server = _server_on_free_port(lambda: metrics.render([("ublkb0", STAT)]))
    port = server.server_address[1]
    try:
        with socket.create_connection(("127.0.0.1", port)) as s:    # garbage, then hang up
            s.sendall(b"\x00\xffnot http\r\n\r\n")
        with socket.create_connection(("127.0.0.1", port)) as s:    # half a request, then gone
            s.sendall(b"GET /metr")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert parse(reply.read().decode())[("trueno_ublk_reads_total", 'device="ublkb0"')] == 100
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)
    finally:
        server.stop()


def _server_on_free_port(collect):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = metrics_server.MetricsServer(f"127.0.0.1:{port}", collect)
    server.start()
    return server


def test_top_frame_rates_ratios_and_shares():
    before = {0: (10.0, STAT, "live"), 1: (10.0, None, "dead")}
    later = {**STAT, "io_stat": {**STAT["io_stat"], "reads": 300, "written_bytes": (8 << 20) + (4 << 20)},
             "queues": [{"id": 0, "tid": 11, "inflight": 3, "cpu_seconds": 2.0},
                        {"id": 1, "tid": 12, "inflight": 1, "cpu_seconds": 0.5}]}
    now = {0: (12.0, later, "live"), 1: (12.0, None, "dead")}
    header, live, dead, blank, tiers, entropy = top.frame(now, before)
    assert header.startswith("DEVICE")
    fields = live.split()
    assert fields[:6] == ["ublkb0", "live", "100", "0", "0.0", "2.0"]   # 200 reads / 2 s; 4 MiB / 2 s
    assert fields[6] == "4.00"                                           # 8 MiB / 2 MiB
    assert "25%" in fields and "12%" in fields                           # same 512/2048, huge 256/2048
    assert "6%" in fields and "50%" in fields                            # recompressed 128, idle 1024
    assert "4/256" in fields and "q0 25%" in live and "q1 0%" in live
    assert dead.split() == ["ublkb1", "dead"]
    # Where the live device's 2048 pages are, and what was written (250 of 271 at 7-8 bits).
    assert blank == ""
    assert tiers == ("ublkb0      tiers: same 25% 0B | fast 56% 896K | raw 12% 1M | recompressed 5% 104K | "
                     "framed 2% 24K")
    assert entropy.startswith("ublkb0      entropy of pages written, bits a byte: 0-1 0% 1-2 0% 2-3 1%")
    assert entropy.endswith("7-8 92%")
    assert top.frame({}, {}) == ["no devices"]
