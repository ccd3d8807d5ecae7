"""A one-shot report from a child process to the parent waiting on it.

`create` waits for its detached daemon to say that the device is live (or
why it is not), and the supervisor waits the same way for each I/O worker
it forks. One grammar for both: a single line, "live DETAIL" or "error
MESSAGE", written once; a child that dies before writing leaves the pipe
empty, which the reader sees as None.
"""
import logging
import os
import traceback

from trueno_ublk.base.errors import UserError

log = logging.getLogger(__name__)


class Report:
    """Made before the fork: the child calls live() or error() once (the
    second call is a no-op), the parent read()."""

    def __init__(self):
        self._r, self._w = os.pipe()

    @property
    def write_fd(self) -> int:
        return self._w

    def child_side(self) -> None:
        """In a child that keeps its other descriptors: it only writes."""
        os.close(self._r)

    def live(self, detail: str = "") -> None:
        self._send(f"live {detail}")

    def error(self, message: str) -> None:
        self._send(f"error {message}")

    def _send(self, line: str) -> None:
        if self._w is not None:
            os.write(self._w, (line.strip() + "\n").encode())
            os.close(self._w)
            self._w = None

    def read(self) -> tuple[str, str] | None:
        """In the parent, after fork: blocks until the child reported (or
        died, or closed its end): ("live", detail), ("error", message) or None."""
        os.close(self._w)
        self._w = None
        with os.fdopen(self._r, "r") as pipe:
            line = pipe.read().strip()
        kind, _, detail = line.partition(" ")
        return (kind, detail) if kind in ("live", "error") else None

    def run_as_child(self, what: str, body) -> None:
        """A forked child's whole life, `what` doing body() (which returns
        the exit status): any failure is logged and reported as one line.
        Never returns into the parent's code."""
        code = 1
        try:
            code = body()
        except UserError as e:
            log.error("%s", e)
            self.error(str(e))
        except BaseException as e:
            log.error("%s failed: %s", what, "".join(traceback.format_exception(e)))
            self.error(f"{what} failed: {e!r}")
        finally:
            os._exit(code)
