"""The admin socket: each daemon answers stat/set/compact requests on
/run/trueno-ublk/N.sock (root only, mode 0600).

One JSON object per line each way. Requests are bounded in size and time;
anything malformed gets an error reply, and nothing a client sends can stop
the daemon's I/O.
"""
import json
import logging
import os
import socket
import socketserver
import threading

from trueno_ublk import state
from trueno_ublk.errors import UserError

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 4096
CLIENT_TIMEOUT_SECONDS = 5.0
MAX_CLIENTS = 8


class AdminServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, dev_id: int, handlers: dict):
        self.handlers = handlers
        self._client_slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self.path = str(state.socket_path(dev_id))
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        old_umask = os.umask(0o177)             # the socket is born 0600
        try:
            super().__init__(self.path, _Connection)
        finally:
            os.umask(old_umask)
        self.thread = threading.Thread(target=self.serve_forever, name="admin", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def process_request(self, request, client_address):
        # A flood of idle connections costs at most MAX_CLIENTS threads.
        if not self._client_slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._client_slots.release()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def answer(self, line: bytes) -> dict:
        try:
            request = json.loads(line)
            if not isinstance(request, dict) or not isinstance(request.get("command"), str):
                raise ValueError("a request is an object with a \"command\" string")
            handler = self.handlers.get(request.pop("command"))
            if handler is None:
                raise ValueError(f"unknown command; known: {', '.join(sorted(self.handlers))}")
            return {"ok": True, **handler(**request)}
        except (ValueError, TypeError, UnicodeDecodeError) as e:
            return {"ok": False, "error": str(e)}
        except Exception as e:                  # the daemon outlives any request
            log.exception("admin request failed")
            return {"ok": False, "error": f"internal error: {e}"}


class _Connection(socketserver.StreamRequestHandler):
    def setup(self):
        self.request.settimeout(CLIENT_TIMEOUT_SECONDS)
        super().setup()

    def handle(self):
        try:
            while True:
                line = self.rfile.readline(MAX_REQUEST_BYTES + 1)
                if not line:
                    return
                if len(line) > MAX_REQUEST_BYTES or not line.endswith(b"\n"):
                    self._reply({"ok": False, "error": f"request longer than {MAX_REQUEST_BYTES} bytes"})
                    return
                self._reply(self.server.answer(line))
        except OSError:
            return                              # timeouts, clients gone mid-reply

    def _reply(self, reply: dict) -> None:
        self.wfile.write(json.dumps(reply).encode() + b"\n")
        self.wfile.flush()


def request(dev_id: int, command: str, **args) -> dict:
    """Ask the daemon of /dev/ublkbN; raises UserError when it cannot answer."""
    path = str(state.socket_path(dev_id))
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(path)
            s.sendall(json.dumps({"command": command, **args}).encode() + b"\n")
            with s.makefile("rb") as f:
                reply = json.loads(f.readline() or b"null")
    except PermissionError:
        raise UserError(f"cannot reach the daemon of /dev/ublkb{dev_id}: permission denied (run as root)") from None
    except (OSError, ValueError):
        raise UserError(f"the daemon of /dev/ublkb{dev_id} is not answering") from None
    if not isinstance(reply, dict) or not reply.get("ok"):
        raise UserError(f"/dev/ublkb{dev_id}: {reply.get('error') if isinstance(reply, dict) else 'bad reply'}")
    return reply
