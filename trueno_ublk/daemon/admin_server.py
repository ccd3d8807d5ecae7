"""The admin socket's server: each worker answers stat, set, compact,
resize, idle, recompress and writeback requests on /run/trueno-ublk/N.sock
(root only, mode 0600), one JSON object per line each way (devices/admin.py
is the client). Requests are bounded in size and time; anything malformed
gets an error reply, and nothing a client sends can stop the daemon's I/O.
"""
import json
import logging
import os
import socket
import threading

from trueno_ublk.devices import records
from trueno_ublk.devices.admin import encode

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 4096
CLIENT_TIMEOUT_SECONDS = 5.0
MAX_CLIENTS = 8


class AdminServer:
    """Accepts on the socket in one thread, answers each client in its own.
    stop() shuts the listening socket down, which ends the blocked accept()
    at once: a deleted device does not wait out a polling interval."""

    def __init__(self, dev_id: int, handlers: dict):
        self.handlers = handlers
        self._client_slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self.path = str(records.socket_path(dev_id))
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old_umask = os.umask(0o177)             # the socket is born 0600
        try:
            self._listener.bind(self.path)
        finally:
            os.umask(old_umask)
        self._listener.listen(MAX_CLIENTS)
        self.thread = threading.Thread(target=self._accept_loop, name="admin", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if self.thread.is_alive():
            self.thread.join()
        self._listener.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return                          # shut down by stop()
            # A flood of idle connections costs at most MAX_CLIENTS threads.
            if not self._client_slots.acquire(blocking=False):
                conn.close()
                continue
            threading.Thread(target=self._serve_client, args=(conn,), name="admin-client",
                             daemon=True).start()

    def _serve_client(self, conn: socket.socket) -> None:
        try:
            with conn:
                conn.settimeout(CLIENT_TIMEOUT_SECONDS)
                with conn.makefile("rb") as rfile:
                    while True:
                        line = rfile.readline(MAX_REQUEST_BYTES + 1)
                        if not line:
                            return
                        if len(line) > MAX_REQUEST_BYTES or not line.endswith(b"\n"):
                            conn.sendall(encode({"ok": False, "error":
                                                  f"request longer than {MAX_REQUEST_BYTES} bytes"}))
                            return
                        conn.sendall(encode(self.answer(line)))
        except OSError:
            return                              # timeouts, clients gone mid-reply
        finally:
            self._client_slots.release()

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
