"""OTLP export (trueno_ublk.observe.otlp) through the real OpenTelemetry SDK to a
receiver that decodes the real OTLP protobuf messages (opentelemetry-proto).
The daemon's side of it runs in tests/integration/test_watch.py."""
import logging
import time

import pytest
from test_metrics_and_top import STAT

from trueno_ublk.observe import metrics, otlp

from otlp_receiver import Receiver, decoded


@pytest.fixture
def receiver():
    with Receiver() as server:
        yield server


def test_exports_what_metrics_carries(receiver):
    export = otlp.OtlpExport(receiver.url, "ublkb7", lambda: STAT, interval=0.2)
    export.start()
    try:
        resource, found = decoded(receiver.wait(1)[0])
    finally:
        export.stop()
    assert resource["service.name"] == "trueno-ublk" and resource["trueno_ublk.device"] == "ublkb7"
    assert resource["host.name"]
    dev = (("device", "ublkb7"),)
    assert found["trueno_ublk_up"] == ("gauge", "1", {dev: 1})
    assert found["trueno_ublk_written_bytes"] == ("sum", "By", {dev: 8 << 20})
    assert found["trueno_ublk_queue_cpu_seconds"][:2] == ("sum", "s")
    assert found["trueno_ublk_queue_cpu_seconds"][2][(("device", "ublkb7"), ("queue", "1"))] == 0.5
    assert found["trueno_ublk_tier_pages"][2][(("device", "ublkb7"), ("tier", "framed"))] == 32
    # Every family `metrics` renders is there, with the same samples.
    for family in metrics.families([("ublkb7", STAT)]):
        kind, _, points = found[otlp.otlp_name(family.name, family.kind)]
        assert kind == ("sum" if family.kind == "counter" else "gauge")
        assert {tuple(sorted(labels.items())): v for labels, v in family.samples} == points


def test_a_dead_worker_reads_as_down(receiver):
    export = otlp.OtlpExport(receiver.url + "/", "ublkb1", lambda: None, interval=0.2)
    export.start()
    try:
        _, found = decoded(receiver.wait(1)[0])
    finally:
        export.stop()
    assert found == {"trueno_ublk_up": ("gauge", "1", {(("device", "ublkb1"),): 0})}


def test_an_unreachable_collector_costs_one_log_line(caplog):
    with socket_nobody_listens_on() as port:
        export = otlp.OtlpExport(f"http://127.0.0.1:{port}", "ublkb0", lambda: STAT, interval=0.2)
        with caplog.at_level(logging.INFO, logger="trueno_ublk.observe.otlp"):
            export.start()
            time.sleep(4)                       # about 20 failed exports
            started = time.monotonic()
            export.stop()
            stopping = time.monotonic() - started
    # What reaches the daemon's log: ours. (pytest also hooks its capture onto
    # the SDK's logger, which otlp.py keeps from propagating to the log.)
    assert logging.getLogger("opentelemetry").propagate is False
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == otlp.log.name]
    assert len(warnings) == 1 and "OTLP export" in warnings[0].getMessage(), caplog.text
    assert stopping < otlp.STOP_SECONDS + 1.0


class socket_nobody_listens_on:
    """A loopback port bound but not listening: connecting is refused."""

    def __enter__(self) -> int:
        import socket
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return self.sock.getsockname()[1]

    def __exit__(self, *exc):
        self.sock.close()


@pytest.mark.parametrize("endpoint, url", [
    ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/metrics"),
    ("https://collector.example:4318/", "https://collector.example:4318/v1/metrics"),
    ("http://[::1]:4318/custom/path", "http://[::1]:4318/custom/path"),
])
def test_metrics_url(endpoint, url):
    assert otlp.metrics_url(endpoint) == url


@pytest.mark.parametrize("endpoint", ["127.0.0.1:4318", "ftp://host", "http://", "http://host:99999",
                                      "http://host/?a=1", ""])
def test_bad_endpoint(endpoint):
    with pytest.raises(ValueError):
        otlp.metrics_url(endpoint)
