"""The daemon's opt-in HTTP endpoint for Prometheus (`create
--metrics-listen`): GET /metrics answers with metrics.render's text.
Its own module: only a daemon that serves metrics pays for http.server."""
import http.server
import logging
import socket
import socketserver
import threading

from trueno_ublk.observe.metrics import parse_address

log = logging.getLogger(__name__)

CLIENT_TIMEOUT_SECONDS = 5.0


class _Handler(http.server.BaseHTTPRequestHandler):
    timeout = CLIENT_TIMEOUT_SECONDS

    def do_GET(self):
        if self.path.split("?")[0] != "/metrics":
            self.send_error(404)
            return
        try:
            body = self.server.collect().encode()
        except Exception:                       # never let a scrape hurt the daemon
            log.exception("collecting metrics failed")
            self.send_error(500)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass                                    # scrapes every few seconds: not worth a log line


class MetricsServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """GET /metrics on `address`, answered by collect() -> exposition text."""
    daemon_threads = True

    def __init__(self, address: str, collect):
        host, port = parse_address(address)
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.collect = collect
        super().__init__((host, port), _Handler)
        self._thread = threading.Thread(target=self.serve_forever, name="metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
