"""One hardware queue: a thread that answers the kernel's requests.

The C shim hands over every ready request in one call and commits the
previous batch's results in the same call, so the per-request work in Python
is the dispatch below plus the store's own work.
"""
import errno
import logging
import mmap
import threading

import prctl

from trueno_ublk._shim import ffi, lib
from trueno_ublk.units import SECTOR_SIZE

log = logging.getLogger(__name__)

READ, WRITE, FLUSH, DISCARD, WRITE_ZEROES = (
    lib.UBLK_IO_OP_READ, lib.UBLK_IO_OP_WRITE, lib.UBLK_IO_OP_FLUSH,
    lib.UBLK_IO_OP_DISCARD, lib.UBLK_IO_OP_WRITE_ZEROES)


IO_COUNTERS = ("reads", "writes", "discards", "flushes",
               "failed_reads", "failed_writes", "invalid_io")


class QueueError(OSError):
    pass


class Queue:
    def __init__(self, cdev_fd: int, q_id: int, depth: int, buf_size: int, store,
                 dev_size: int, fetch_op: int, commit_op: int):
        self.q_id = q_id
        self.depth = depth
        self.store = store
        self.dev_size = dev_size
        self.counts = dict.fromkeys(IO_COUNTERS, 0)
        # Per-tag buffers: one anonymous mapping, faulted in now and locked
        # by mlockall, so that serving a request never needs a page itself.
        # (MAP_POPULATE is ignored under MCL_ONFAULT: touch every page.)
        self._buffers = mmap.mmap(-1, depth * buf_size)
        self._buffers[::mmap.PAGESIZE] = bytes(len(range(0, depth * buf_size, mmap.PAGESIZE)))
        view = memoryview(self._buffers)
        self._tag_views = [view[t * buf_size:(t + 1) * buf_size] for t in range(depth)]
        self._reqs = ffi.new("struct shim_request[]", depth)
        self._args = (cdev_fd, q_id, depth, ffi.from_buffer(self._buffers), buf_size,
                      fetch_op, commit_op)
        self._q = None
        self.opened = threading.Event()
        self.open_error: OSError | None = None
        self.thread = threading.Thread(target=self._run, name=f"ublk-q{q_id}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Wake the thread out of its wait; it closes the queue and exits."""
        if self._q is not None:
            lib.shim_queue_stop(self._q)

    def _run(self) -> None:
        # A thread that writes pages out on behalf of reclaim must not itself
        # wait for reclaim: PR_SET_IO_FLUSHER gives it PF_MEMALLOC_NOIO.
        prctl.set_name(f"ublk-q{self.q_id}")
        prctl.set_io_flusher(1)
        err = ffi.new("int *")
        # Each queue's commands must come from one thread: open it here.
        self._q = lib.shim_queue_open(*self._args, err)
        if self._q == ffi.NULL:
            self._q = None
            self.open_error = QueueError(-err[0], f"queue {self.q_id}: {errno.errorcode.get(-err[0])}")
            self.opened.set()
            return
        self.opened.set()
        try:
            self._serve()
        finally:
            lib.shim_queue_close(self._q)

    def _serve(self) -> None:
        q, reqs, depth, views = self._q, self._reqs, self.depth, self._tag_views
        handle = self._handle
        n = 0
        while True:
            n = lib.shim_queue_run(q, n, reqs, depth)
            if n < 0:
                if n != -errno.ENODEV:
                    log.error("queue %d: io_uring failed: %s", self.q_id, errno.errorcode.get(-n, n))
                return
            for i in range(n):
                r = reqs[i]
                r.result = handle(r.op, r.start_sector * SECTOR_SIZE,
                                  r.nr_sectors * SECTOR_SIZE, views[r.tag])

    def _handle(self, op: int, offset: int, length: int, buf: memoryview) -> int:
        """One request: bytes done, or -errno. Never raises: the daemon keeps
        serving whatever a client sends."""
        counts = self.counts
        if offset + length > self.dev_size:
            counts["invalid_io"] += 1
            return -errno.EIO
        try:
            if op == READ:
                counts["reads"] += 1
                self.store.read(offset, buf[:length])
                return length
            if op == WRITE:
                counts["writes"] += 1
                self.store.write(offset, buf[:length])
                return length
            if op == FLUSH:
                counts["flushes"] += 1
                self.store.flush()
                return 0
            if op == DISCARD or op == WRITE_ZEROES:
                counts["discards"] += 1
                (self.store.discard if op == DISCARD else self.store.write_zeroes)(offset, length)
                return 0
            counts["invalid_io"] += 1
            return -errno.EOPNOTSUPP
        except MemoryError:
            counts["failed_writes"] += 1       # mem_limit: the write fails, nothing hangs
            return -errno.EIO
        except Exception:
            counts["failed_reads" if op == READ else "failed_writes"] += 1
            log.exception("queue %d: op %d at %d+%d failed", self.q_id, op, offset, length)
            return -errno.EIO
