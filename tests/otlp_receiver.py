"""An OTLP/HTTP metrics receiver that decodes the real OTLP protobuf
messages (opentelemetry-proto): what the OTLP export tests send to."""
import http.server
import threading

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

METRICS_PATH = "/v1/metrics"


class Receiver(http.server.HTTPServer):
    """An OTLP/HTTP metrics receiver on loopback: every request it decoded."""

    def __init__(self):
        self.requests = []
        self.arrived = threading.Condition()
        super().__init__(("127.0.0.1", 0), ReceiverHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __exit__(self, *exc):
        self.shutdown()
        super().__exit__(*exc)

    def wait(self, count: int, seconds: float = 20.0) -> list:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.requests) >= count, seconds), self.requests
            return list(self.requests)


class ReceiverHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        assert self.path == METRICS_PATH and self.headers["Content-Type"] == "application/x-protobuf"
        request = metrics_service_pb2.ExportMetricsServiceRequest()
        request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
        body = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        with self.server.arrived:
            self.server.requests.append(request)
            self.server.arrived.notify_all()

    def log_message(self, format, *args):
        pass


def value(point) -> float:
    return point.as_int if point.WhichOneof("value") == "as_int" else point.as_double


def decoded(request) -> tuple[dict, dict]:
    """(resource attributes, {metric name: (kind, unit, {attributes: value})})."""
    (resource_metrics,) = request.resource_metrics
    resource = {a.key: a.value.string_value for a in resource_metrics.resource.attributes}
    found = {}
    for scope in resource_metrics.scope_metrics:
        for m in scope.metrics:
            kind = m.WhichOneof("data")
            data = getattr(m, kind)
            if kind == "sum":
                assert data.is_monotonic and data.aggregation_temporality == 2     # cumulative
            points = {tuple(sorted((a.key, a.value.string_value) for a in p.attributes)): value(p)
                      for p in data.data_points}
            found[m.name] = (kind, m.unit, points)
    return resource, found
