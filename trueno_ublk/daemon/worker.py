"""The I/O worker: the process that serves one device's requests.

The supervisor (supervisor.py) forks it once the device exists. It opens
/dev/ublkcN, runs one thread per queue over the store, answers the admin
socket, and then either starts the device or -- when it replaces a worker
that died -- ends the kernel's user recovery, after which the requests
queued meanwhile are reissued to it. The store's arena is the supervisor's
memfd, so a replacement finds every page the dead worker stored.
"""
import dataclasses
import errno
import gc
import logging
import os
import select
import signal
import threading
import time

import prctl

from trueno_ublk._native import ffi, lib
from trueno_ublk.base import limits, procfs, stats
from trueno_ublk.base.codecs import codec_for
from trueno_ublk.base.control import Control, ControlError
from trueno_ublk.base.errors import UserError
from trueno_ublk.base.units import PAGE_SIZE
from trueno_ublk.daemon.admin_server import AdminServer
from trueno_ublk.daemon.queue import IO_COUNTERS, Queue
from trueno_ublk.daemon.report import Report
from trueno_ublk.devices import records
from trueno_ublk.observe.metrics import render
from trueno_ublk.stores import open_store
from trueno_ublk.stores.backing import open_backing, open_zram
from trueno_ublk.stores.policy import RECOMPRESS_AFTER, RECOMPRESS_TYPES, WRITEBACK_TYPES

log = logging.getLogger(__name__)

# The exit status of a worker that handed the device over (SIGUSR1):
# not stopped, left for the next server, its pages in the arena.
HANDOVER_STATUS = 75
QUIESCE_TIMEOUT_MS = 10_000
CDEV_WAIT_SECONDS = 5.0
QUEUE_JOIN_SECONDS = 10.0
QUEUE_OPEN_SECONDS = 10.0


def harden_process() -> None:
    """What a swap server needs before it serves a single page: its memory
    locked (on fault, so large reserved mappings cost only what is touched),
    never chosen by the OOM killer, and no garbage collector pauses.
    Neither the lock nor MCL_FUTURE survives fork: each process does this."""
    if lib.mlockall(lib.MCL_CURRENT | lib.MCL_FUTURE | lib.MCL_ONFAULT) != 0:
        err = ffi.errno
        raise UserError(f"cannot lock the daemon's memory (mlockall): {os.strerror(err)}; "
                        "it needs CAP_IPC_LOCK or LimitMEMLOCK=infinity")
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("-1000")
    gc.disable()


class Worker:
    def __init__(self, config, record: records.DeviceRecord, arena_fd: int | None, recovering: bool,
                 arena_kept: bool = False):
        self.config = config
        self.record = record
        self.arena_fd = arena_fd
        self.recovering = recovering
        self.arena_kept = arena_kept      # systemd keeps the arena for the supervisor's successor
        self.stop_requested = False
        self.handing_over = False

    def _request_stop(self, signum, frame) -> None:
        # Nothing here may take a lock: the handler runs in the main thread
        # between two bytecodes, possibly while that thread holds the very
        # lock (a threading.Event set from here could deadlock the worker).
        # The wakeup fd ends the main loop's wait at once.
        self.stop_requested = True

    def _request_handover(self, signum, frame) -> None:
        self.handing_over = True
        self.stop_requested = True

    def _orphaned(self, signum, frame) -> None:
        """The supervisor died. If systemd keeps the arena, the daemon it
        restarts takes the device over: leave it to that one. If nothing
        does, the pages die with this process: stop the device, so that
        its I/O fails rather than waits for a server that will not come."""
        self.handing_over = self.arena_kept
        self.stop_requested = True

    def run(self, report: Report) -> int:
        """Serve until SIGTERM; `report` tells the supervisor once the
        device is live. Returns the exit status: 0 once the device is stopped."""
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGUSR1, self._request_handover)
        signal.signal(signal.SIGINT, signal.SIG_IGN)       # the supervisor decides
        signal.signal(signal.SIGUSR2, self._orphaned)
        prctl.set_pdeathsig(signal.SIGUSR2)
        if os.getppid() != self.record.pid:
            return 1
        harden_process()
        cfg, dev_id = self.config, self.record.dev_id
        store = open_store(cfg.store, cfg.size, codec_for(cfg.algorithm), cfg.huge_threshold,
                           self.arena_fd, attach=self.recovering, policy=cfg.policy)
        if cfg.mem_limit and not self.recovering:   # a recovered store keeps the limit last set
            store.set_mem_limit(cfg.mem_limit)
        if cfg.backing_dev:
            # Opened anew by each worker (O_EXCL: a dead one's is closed); a
            # new one finds the pages the one before it wrote there.
            backing_fd, backing_size = open_backing(cfg.backing_dev)
            store.set_backing(backing_fd, backing_size)
            if cfg.writeback_limit is not None:     # the budget is the worker's: a new one starts it again
                store.set_writeback_limit(cfg.writeback_limit // PAGE_SIZE)
        if cfg.zram_device:
            store.set_zram(*open_zram(cfg.zram_device), cfg.zram_entropy)
        with Control() as ctrl:
            cdev_fd = open_char_device(dev_id)
            fetch_op = ctrl.opcode(lib.UBLK_U_IO_FETCH_REQ, lib.UBLK_IO_FETCH_REQ)
            commit_op = ctrl.opcode(lib.UBLK_U_IO_COMMIT_AND_FETCH_REQ, lib.UBLK_IO_COMMIT_AND_FETCH_REQ)
            user_copy = "USER_COPY" in self.record.features
            threads = self.record.queue_threads
            batch = "BATCH_IO" in self.record.features
            queues = [Queue(cdev_fd, q, self.record.depth, self.record.max_io_bytes, store,
                            fetch_op, commit_op, user_copy, thread, threads, batch)
                      for q in range(self.record.queues) for thread in range(threads)]
            handlers = self._admin_handlers(store, queues, ctrl)
            admin = AdminServer(dev_id, handlers)
            metrics = None
            if cfg.metrics_listen:
                from trueno_ublk.observe.metrics_server import MetricsServer  # only when asked for
                try:
                    metrics = MetricsServer(cfg.metrics_listen,
                                            lambda: render([(f"ublkb{dev_id}", handlers["stat"]())]))
                except OSError as e:
                    raise UserError(f"cannot serve metrics on {cfg.metrics_listen}: {e.strerror}") from None
            started = False
            try:
                admin.start()
                if metrics:
                    metrics.start()
                for q in queues:
                    q.start()
                for q in queues:
                    if not q.opened.wait(QUEUE_OPEN_SECONDS):
                        raise UserError(f"I/O queue {q.name} did not open within {QUEUE_OPEN_SECONDS:.0f}s")
                    if q.open_error:
                        raise UserError(f"cannot set up the I/O queue: {q.open_error.strerror}")
                # Both wait for every queue's FETCHes, then make the device LIVE.
                if self.recovering:
                    ctrl.end_recovery(dev_id, os.getpid())
                else:
                    ctrl.start(dev_id, os.getpid())
                    serve_requests_unscheduled(dev_id)
                started = True
                gc.freeze()         # start-up objects never need scanning again
                self.record.state, self.record.worker_pid = records.State.LIVE, os.getpid()
                report.live()
                while not self.stop_requested:
                    select.select([wake_r], [], [], 1.0)
                    drain(wake_r)
                    if not all(q.thread.is_alive() for q in queues):
                        log.error("a queue thread ended: stopping the device")
                        break
                log.info("%s device %d", "handing over" if self.handing_over else "stopping", dev_id)
            finally:
                admin.stop()
                if metrics:
                    metrics.stop()
                if started and self.handing_over:
                    self._leave(ctrl)
                elif started:
                    ctrl.stop(dev_id)
                for q in queues:
                    q.stop()
                for q in queues:
                    if q.thread.is_alive():
                        q.thread.join(QUEUE_JOIN_SECONDS)
                os.close(cdev_fd)
                store.close()
        return HANDOVER_STATUS if self.handing_over else 0

    def _leave(self, ctrl: Control) -> None:
        """Hand the device over. With QUIESCE (6.16) the kernel lets the
        requests being served finish and holds the new ones; the queues
        then close as in a stop. Without it the worker leaves as a crashed
        one does: it exits with its queues' rings still open, and the
        kernel requeues what they had not completed. (Closing the rings one
        by one instead lost a race on 6.12, in the guest, every time under
        fio: a request dispatched while its queue's ring closed stayed in
        flight, and the kernel waited for it forever before it would let
        any server recover the device.)"""
        if "QUIESCE" in self.record.features:
            try:
                ctrl.quiesce(self.record.dev_id, QUIESCE_TIMEOUT_MS)
                return
            except ControlError as e:
                log.warning("QUIESCE_DEV failed (%s): leaving the device as after a crash", e.strerror)
        os._exit(HANDOVER_STATUS)

    def _admin_handlers(self, store, queues, ctrl: Control) -> dict:
        record = self.record
        resizing = threading.Lock()

        def stat():
            counts = [q.io_counts() for q in queues]
            io = {name: sum(c[name] for c in counts) for name in IO_COUNTERS}
            cpu = procfs.thread_cpu_seconds(os.getpid())
            return {"device": dataclasses.asdict(record), **stats.sections(store.stats(), io),
                    "policy": dataclasses.asdict(store.policy) if store.policy else {},
                    "queues": [{"id": q.name, "tid": q.tid, "inflight": q.inflight,
                                "cpu_seconds": round(cpu.get(q.tid, 0.0), 3)} for q in queues]}

        def set_(mem_limit=None, reset_mem_used_max=False):
            if mem_limit is not None:
                if type(mem_limit) is not int or mem_limit < 0:
                    raise ValueError("mem_limit must be a whole number of bytes >= 0")
                store.set_mem_limit(mem_limit)
            if reset_mem_used_max:
                store.reset_mem_used_max()
            return {}

        def compact():
            return {"pages_freed": store.compact()}

        def idle(age=0):
            if type(age) is not int or age not in RECOMPRESS_AFTER:
                raise ValueError(f"age must be a whole number of seconds, {RECOMPRESS_AFTER.low} to "
                                 f"{RECOMPRESS_AFTER.high}")
            return {"marked": store.mark_idle(age)}

        def recompress(kind="all", algorithm=None, max_pages=0):
            if kind not in RECOMPRESS_TYPES:
                raise ValueError(f"kind must be one of {', '.join(RECOMPRESS_TYPES)}")
            if algorithm is not None and not isinstance(algorithm, str):
                raise ValueError("algorithm must be a name, e.g. zstd:6")
            if type(max_pages) is not int or not 0 <= max_pages < 2**64:
                raise ValueError("max_pages must be a whole number >= 0 (0: no limit)")
            pages, saved = store.recompress(kind, algorithm, max_pages)
            return {"pages": pages, "saved": saved}

        def resize(size=None):
            if type(size) is not int or size not in limits.SIZE or size % PAGE_SIZE:
                raise ValueError(f"size must be a whole number of 4 KiB pages, {limits.SIZE.describe()}")
            if "UPDATE_SIZE" not in record.features:
                raise ValueError("resizing needs Linux 6.16 or newer (UBLK_F_UPDATE_SIZE)")
            with resizing:
                old = store.size
                try:
                    if size > old:
                        store.resize(size)              # then requests may come
                        ctrl.update_size(record.dev_id, size)
                    elif size < old:
                        store.refuse_dropping(size)
                        ctrl.update_size(record.dev_id, size)
                        try:
                            store.resize(size)          # refuses a write that was in flight
                        except ValueError:
                            ctrl.update_size(record.dev_id, old)
                            raise
                except ControlError as e:
                    raise ValueError(f"the kernel refused the new size: {e.strerror}") from None
                record.size = size
                records.save(record)
            return {"size": size}

        def writeback(kind="all", max_pages=0):
            if kind not in WRITEBACK_TYPES:
                raise ValueError(f"kind must be one of {', '.join(WRITEBACK_TYPES)}")
            if type(max_pages) is not int or not 0 <= max_pages < 2**64:
                raise ValueError("max_pages must be a whole number >= 0 (0: no limit)")
            try:
                return {"pages": store.writeback(kind, max_pages or 2**64 - 1)}
            except OSError as e:                # a fault of the device, not of the daemon
                raise ValueError(f"the backing device failed a write ({e.strerror}): "
                                 "those pages stay in RAM") from None

        return {"stat": stat, "set": set_, "compact": compact, "resize": resize, "idle": idle,
                "recompress": recompress, "writeback": writeback}


def drain(fd: int) -> None:
    """Read a non-blocking pipe empty."""
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def serve_requests_unscheduled(dev_id: int) -> None:
    """Hand requests to the queues as they come, with no I/O scheduler, as
    zram (a bio device) is served. The kernel gives a one-queue device
    mq-deadline; on 7.x, in the guest, that halved random 4K IOPS (requests
    reach the queue through kblockd instead of the submitter's own call)."""
    path = f"/sys/block/ublkb{dev_id}/queue/scheduler"
    try:
        with open(path, "w") as f:
            f.write("none")
    except OSError as e:
        log.warning("%s: cannot choose no I/O scheduler: %s", path, e.strerror)


def open_char_device(dev_id: int) -> int:
    """Open /dev/ublkcN, which devtmpfs creates just after ADD_DEV."""
    path = f"/dev/ublkc{dev_id}"
    deadline = time.monotonic() + CDEV_WAIT_SECONDS
    while True:
        try:
            return os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            if time.monotonic() > deadline:
                raise UserError(f"{path} did not appear") from None
            time.sleep(0.01)
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise UserError(f"cannot open {path}: {e.strerror}") from None
            time.sleep(0.05)        # the dead worker's file is still being released
