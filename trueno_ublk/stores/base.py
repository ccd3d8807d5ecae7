"""A store opened for one device, as the I/O worker holds it.

Requests never pass through Python: each queue thread serves them in C,
through a queue server made here, with the store's ops (native/stores/
NAME.c) applied to `handle`, the C object this store opened (NULL for a
store with no state). What stays in Python is the device's life around
that: opening, the admin commands (stat, set, compact) and closing. This
class is the whole of a store that keeps nothing; stores with state
subclass it.
"""
import os

from trueno_ublk._native import ffi, lib
from trueno_ublk.base.units import format_size


class Store:
    # Whether a queue's large batches are worth splitting with a helper
    # thread: only where serving costs CPU (compression), and only with a
    # second CPU to run it.
    splits_batches = False
    policy = None               # policy.Policy, for a store that compresses

    def __init__(self, name: str, size: int):
        self.name = name
        self.size = size
        self.handle = ffi.NULL
        self._servers = []

    def queue_server(self, buffers, buf_size: int, counts, helper: bool | None = None,
                     copy_fd: int = -1, q_id: int = 0):
        """A C queue server (native/server/queue_server.h) for one serving thread:
        `buffers` holds every tag's data, buf_size apart, or is None when the
        server copies each request's data itself through copy_fd, queue
        q_id's /dev/ublkcN (user copy); results are counted in `counts` (a
        cffi struct io_counters). Freed by close()."""
        if helper is None:
            helper = self.splits_batches and (os.cpu_count() or 1) > 1
        err = ffi.new("int *")
        server = lib.queue_server_new(self.name.encode(), self.handle,
                                      ffi.NULL if buffers is None else ffi.from_buffer(buffers),
                                      buf_size, self.size, counts, int(helper), copy_fd, q_id, err)
        if server == ffi.NULL:
            raise OSError(-err[0], f"cannot serve the {self.name} store: {os.strerror(-err[0])}")
        self._servers.append((server, buffers))
        return server

    def close(self) -> None:
        """Free the queue servers (joining their helper threads): only once
        the threads serving with them have stopped."""
        for server, _ in self._servers:
            lib.queue_server_free(server)
        self._servers.clear()

    def resize(self, size: int) -> None:
        """Serve `size` bytes from now on: grow before the kernel learns the
        new size, shrink after it has. Raises ValueError, and changes
        nothing, when the store cannot (no room, or pages stored past it)."""
        self._resize(size)
        for server, _ in self._servers:
            lib.queue_server_set_size(server, size)
        self.size = size

    def _resize(self, size: int) -> None:
        """What the store itself holds for `size` bytes: nothing here."""

    def pages_stored_from(self, offset: int) -> int:
        """Pages stored at byte `offset` and beyond."""
        return 0

    def refuse_dropping(self, size: int) -> None:
        """ValueError if shrinking to `size` bytes would drop stored pages."""
        stored = self.pages_stored_from(size)
        if stored:
            raise ValueError(f"{stored} page(s) are stored past {format_size(size)}: "
                             "shrinking would lose them (discard them first)")

    def stats(self) -> dict:
        """The store's statistics by key (base/stats.py); none for a
        store that holds nothing."""
        return {}

    def set_mem_limit(self, limit: int) -> None:
        raise ValueError(f"the {self.name} store holds no memory to limit")

    def reset_mem_used_max(self) -> None:
        raise ValueError(f"the {self.name} store holds no memory to measure")

    def compact(self) -> int:
        """Give back memory the store holds; returns 4 KiB pages freed."""
        return 0

    def mark_idle(self, age: int) -> int:
        """Mark stored pages not accessed for `age` seconds (0: all) idle; how many."""
        raise ValueError(f"the {self.name} store keeps no pages to mark")

    def recompress(self, kind: str, algorithm: str | None, max_pages: int) -> tuple[int, int]:
        """Recompress up to max_pages (0: all) pages of `kind` (policy.
        RECOMPRESS_TYPES) with `algorithm` (None: the policy's): (pages, bytes saved)."""
        raise ValueError(f"the {self.name} store keeps no pages to recompress")

    def writeback(self, kind: str, max_pages: int, age: int = 0) -> int:
        """Write up to max_pages pages of `kind` (policy.WRITEBACK_TYPES) to
        the backing device, freeing their memory: how many."""
        raise ValueError(f"the {self.name} store keeps no pages to write back")
