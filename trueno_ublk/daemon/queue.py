"""One hardware queue: a thread that answers the kernel's requests.

The thread makes one C call, queue_server_run, that loops until the queue
stops: queue_ring_run commits the previous batch's results and hands over
every ready request in a flat array, and the queue server serves them
all with the store's ops. No Python runs per request or per batch, so
queues run in parallel and never wait for the GIL (which, under swap, a
Python thread may hold while it waits for memory that only these queues
can free).
"""
import errno
import logging
import mmap
import os
import threading

import prctl

from trueno_ublk._native import ffi, lib

log = logging.getLogger(__name__)

QUEUE_NICE = -10
IO_COUNTERS = tuple(name for name, _ in ffi.typeof("struct io_counters").fields)


class QueueError(OSError):
    pass


class Queue:
    """One thread serving hardware queue q_id: all its tags, or, with
    `threads` per queue (UBLK_F_PER_IO_DAEMON), every threads-th one from
    tag `thread` on. `batch`: the device has UBLK_F_BATCH_IO (and one
    thread per queue), and its I/O commands are the batched ones."""

    def __init__(self, cdev_fd: int, q_id: int, depth: int, buf_size: int, store,
                 fetch_op: int, commit_op: int, user_copy: bool, thread: int = 0, threads: int = 1,
                 batch: bool = False):
        self.q_id = q_id
        self.name = str(q_id) if threads == 1 else f"{q_id}.{thread}"
        self.depth = depth
        self.counts = ffi.new("struct io_counters *")
        self._inflight = ffi.new("int *")   # requests of the batch being served
        self.tid = 0
        if user_copy:
            # The server reads and writes each request's data on /dev/ublkcN
            # through one buffer per serving thread (made by the C server).
            self._buffers = None
            # Threads sharing a queue share its work already: no helpers.
            self._server = store.queue_server(None, buf_size, self.counts, helper=None if threads == 1 else False,
                                              copy_fd=cdev_fd, q_id=q_id)
        else:
            # Per-tag buffers: one anonymous mapping, faulted in now and
            # locked by mlockall, so that serving a request never needs a
            # page itself. (MAP_POPULATE is ignored under MCL_ONFAULT: touch
            # every page.)
            self._buffers = mmap.mmap(-1, depth * buf_size)
            self._buffers[::mmap.PAGESIZE] = bytes(len(range(0, depth * buf_size, mmap.PAGESIZE)))
            self._server = store.queue_server(self._buffers, buf_size, self.counts)
        self._reqs = ffi.new("struct ublk_request[]", depth)
        self._args = (cdev_fd, q_id, depth, thread, threads,
                      ffi.NULL if self._buffers is None else ffi.from_buffer(self._buffers), buf_size,
                      fetch_op, commit_op, batch)
        self._q = None
        self.opened = threading.Event()
        self.open_error: OSError | None = None
        self.thread = threading.Thread(target=self._run, name=f"ublk-q{self.name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Wake the thread out of its wait; it closes the queue and exits."""
        if self._q is not None:
            lib.queue_ring_stop(self._q)

    @property
    def inflight(self) -> int:
        return self._inflight[0]

    def io_counts(self) -> dict:
        return {name: getattr(self.counts, name) for name in IO_COUNTERS}

    def _run(self) -> None:
        # `opened` is set whatever happens here: start-up waits on it.
        try:
            self._open()
        except OSError as e:
            self.open_error = e
            return
        finally:
            self.opened.set()
        try:
            self._serve()
        finally:
            lib.queue_ring_close(self._q)

    def _open(self) -> None:
        # A thread that writes pages out on behalf of reclaim must not itself
        # wait for reclaim: PR_SET_IO_FLUSHER gives it PF_MEMALLOC_NOIO.
        prctl.set_name(f"ublk-q{self.name}")
        try:
            prctl.set_io_flusher(1)
        except OSError as e:
            raise QueueError(e.errno, f"queue {self.name} cannot become an IO flusher "
                                      f"(PR_SET_IO_FLUSHER needs CAP_SYS_RESOURCE): {e.strerror}") from None
        self.tid = threading.get_native_id()
        # A swap-in waits for this thread: it should not wait for the CPU
        # behind the store's background work or the programs it serves
        # (measured: mean swap-in latency 0.37 -> 0.31 ms). Without
        # CAP_SYS_NICE it keeps the default, like the reserve's refill.
        try:
            os.setpriority(os.PRIO_PROCESS, self.tid, QUEUE_NICE)
        except PermissionError:
            pass
        err = ffi.new("int *")
        # A tag's commands must come from the thread that fetched it: open here.
        q = lib.queue_ring_open(*self._args, err)
        if q == ffi.NULL:
            raise QueueError(-err[0], f"queue {self.name}: {os.strerror(-err[0])}")
        self._q = q

    def _serve(self) -> None:
        ret = lib.queue_server_run(self._server, self._q, self._reqs, self.depth, self._inflight)
        if ret != -errno.ENODEV:
            log.error("queue %s: io_uring failed: %s", self.name, errno.errorcode.get(-ret, ret))
