"""OpenTelemetry export (`create --otlp-endpoint URL`): the figures of
`trueno-ublk metrics` (metrics.families) pushed to a collector over
OTLP/HTTP with protobuf, through the OpenTelemetry SDK.

It runs as a process of its own (`python -m trueno_ublk.observe.otlp`), which the
supervisor starts once the device is live and stops with it. It asks the
worker for `stat` over the admin socket, like the CLI: the worker's I/O
threads never share a lock or the GIL with it, and its memory (about 40
MiB: an interpreter with the SDK, protobuf and an HTTP client) is not
locked as the daemon's is; a
crash of it costs nothing but the export. While the worker is down
(recovering) it exports `up` 0. A collector that is unreachable or fails
costs the SDK's thread its retries and the log one line a minute at most
(RateLimitedLog). The SDK is an extra (pip install 'trueno-ublk[otlp]').

Names: Prometheus' (trueno_ublk_ prefix), less the `_total` a counter has
there (an OTLP-to-Prometheus bridge adds it back); units UCUM's (By, s)
for the metrics' own (stats.Stat.unit).
"""
import importlib.util
import logging
import os
import socket
import sys
import threading
import time
import urllib.parse

from trueno_ublk.observe.metrics import PREFIX, declared, families
from trueno_ublk.stores.policy import parse_duration

log = logging.getLogger(__name__)

METRICS_PATH = "/v1/metrics"
EXPORT_TIMEOUT_SECONDS = 10.0
LOG_EVERY_SECONDS = 60.0
STOP_SECONDS = 2.0                  # for the last export when the device stops
STAT_TIMEOUT_SECONDS = 5.0
SDK_MISSING = "the OpenTelemetry SDK is not installed: pip install 'trueno-ublk[otlp]'"


def sdk_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None
               for name in ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"))


def metrics_url(endpoint: str) -> str:
    """The URL to POST metrics to: ENDPOINT as given if it has a path, else
    ENDPOINT/v1/metrics (OTEL_EXPORTER_OTLP_ENDPOINT's rule). ValueError
    for anything but an http(s) URL with a host."""
    url = urllib.parse.urlsplit(endpoint)
    try:
        url.port                                    # noqa: B018  (raises on a bad port)
    except ValueError:
        raise ValueError(f"'{endpoint}' has a bad port") from None
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"'{endpoint}' is not an http:// or https:// URL with a host "
                         "(e.g. http://127.0.0.1:4318)")
    if url.query or url.fragment:
        raise ValueError(f"'{endpoint}' has a query or fragment: give the collector's URL")
    return endpoint if url.path not in ("", "/") else endpoint.rstrip("/") + METRICS_PATH


def parse_interval(text: str, what: str = "otlp-interval") -> int:
    """Seconds between exports, as durations are written (60, 90s, 5m); at least 1."""
    seconds = parse_duration(text, what)
    if seconds < 1:
        raise ValueError(f"{what} must be at least 1 second, not '{text}'")
    return seconds


def otlp_name(name: str, kind: str) -> str:
    return PREFIX + (name[:-len("_total")] if kind == "counter" and name.endswith("_total") else name)


UCUM_UNITS = {"bytes": "By", "seconds": "s"}        # any other: "1", a count


class RateLimitedLog(logging.Handler):
    """The SDK's own log lines (a failed export, each retry), passed on to
    our log at most once every LOG_EVERY_SECONDS, with a count of those left out."""

    def __init__(self):
        super().__init__()
        self.next_at = 0.0
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.WARNING:
            return
        now = time.monotonic()
        if now < self.next_at:
            self.dropped += 1
            return
        self.next_at = now + LOG_EVERY_SECONDS
        more = f" ({self.dropped} more such lines left out)" if self.dropped else ""
        self.dropped = 0
        log.warning("OTLP export: %s%s", record.getMessage().splitlines()[0], more)


class OtlpExport:
    """Every `interval` seconds, the metrics of `stat()` (a stat reply, None
    if it cannot answer) for device `device`, to `endpoint`."""

    def __init__(self, endpoint: str, device: str, stat, interval: float):
        self.url = metrics_url(endpoint)
        self.device, self.stat, self.interval = device, stat, interval
        self._lock = threading.Lock()
        self._snapshot: dict = {}
        self._taken = 0.0
        self.provider = None

    def start(self) -> None:
        """Import the SDK and start its reader thread, which exports every interval."""
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        sdk_log = logging.getLogger("opentelemetry")
        if not any(isinstance(h, RateLimitedLog) for h in sdk_log.handlers):
            sdk_log.propagate = False
            sdk_log.addHandler(RateLimitedLog())
        from trueno_ublk import __version__
        resource = Resource.create({"service.name": "trueno-ublk", "service.version": __version__,
                                    "host.name": socket.gethostname(), "trueno_ublk.device": self.device})
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=self.url, timeout=EXPORT_TIMEOUT_SECONDS),
            export_interval_millis=self.interval * 1000, export_timeout_millis=EXPORT_TIMEOUT_SECONDS * 1000)
        provider = MeterProvider(resource=resource, metric_readers=[reader])
        meter = provider.get_meter("trueno_ublk")
        for metric in declared():
            make = meter.create_observable_counter if metric.kind == "counter" else meter.create_observable_gauge
            make(otlp_name(metric.name, metric.kind), callbacks=[self._observer(metric.name)],
                 unit=UCUM_UNITS.get(metric.unit, "1"), description=metric.help)
        self.provider = provider
        log.info("exporting metrics over OTLP to %s every %gs", self.url, self.interval)

    def _observer(self, name: str):
        from opentelemetry.metrics import Observation

        def observe(options):
            family = self._families().get(name)
            return [Observation(value, labels) for labels, value in family.samples] if family else []
        return observe

    def _families(self) -> dict:
        """This collection's families: stat asked once for all the
        instruments a collection calls back in a row."""
        with self._lock:
            if time.monotonic() - self._taken > min(1.0, self.interval / 2):
                try:
                    reply = self.stat()
                except Exception:               # a bad reply: export up 0, keep exporting
                    log.exception("collecting metrics for OTLP failed")
                    reply = None
                self._snapshot = {f.name: f for f in families([(self.device, reply)])}
                self._taken = time.monotonic()
            return self._snapshot

    def stop(self) -> None:
        """A last export, given STOP_SECONDS at most, then the reader stops."""
        if self.provider is not None:
            self.provider.shutdown(timeout_millis=STOP_SECONDS * 1000)
            self.provider = None


def main() -> None:
    """python -m trueno_ublk.observe.otlp DEV_ID ENDPOINT INTERVAL SUPERVISOR_PID:
    export device DEV_ID's metrics until SIGTERM, or until the supervisor
    that started it dies (PDEATHSIG); then one last export."""
    import signal

    import prctl

    from trueno_ublk.base.errors import UserError
    from trueno_ublk.base.logs import configure_logging
    from trueno_ublk.devices import admin
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    prctl.set_pdeathsig(signal.SIGTERM)
    prctl.set_name("trueno-otlp")
    # The daemon is shielded from the OOM killer (oom_score_adj -1000,
    # which we inherit from the supervisor); its exporter need not be.
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("0")
    configure_logging()
    dev_id, endpoint, interval, supervisor = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    if os.getppid() != supervisor:      # it died before PDEATHSIG was set
        return

    def stat():
        try:
            return admin.request(dev_id, "stat", timeout=STAT_TIMEOUT_SECONDS)
        except UserError:               # the worker is down or busy: up 0
            return None
    export = OtlpExport(endpoint, f"ublkb{dev_id}", stat, interval)
    export.start()
    stop.wait()
    export.stop()


if __name__ == "__main__":
    main()
