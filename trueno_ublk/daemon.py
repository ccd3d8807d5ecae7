"""The daemon: owns one ublk device from ADD_DEV to DEL_DEV.

Start-up order matters to the kernel: ADD_DEV and SET_PARAMS, then every
queue thread posts a FETCH for each tag, then START_DEV -- sent from this
(main) thread, since it waits for those FETCHes and may scan partitions
through the queues. Teardown runs the other way: STOP_DEV, queues drain and
close /dev/ublkcN, DEL_DEV.
"""
import dataclasses
import errno
import gc
import logging
import os
import signal
import sys
import threading
import time
import traceback

import psutil

from trueno_ublk import state
from trueno_ublk.admin import AdminServer
from trueno_ublk._shim import ffi, lib
from trueno_ublk.codecs import codec_for
from trueno_ublk.control import Control, ControlError, feature_names
from trueno_ublk.errors import UserError
from trueno_ublk.queue import IO_COUNTERS, Queue
from trueno_ublk.stores import make_store
from trueno_ublk.stores.ram import DEFAULT_HUGE_THRESHOLD

log = logging.getLogger(__name__)

MAX_IO_BYTES = 128 << 10      # per tag: 16 MiB of locked buffers per queue at depth 128
CDEV_WAIT_SECONDS = 5.0
QUEUE_JOIN_SECONDS = 10.0
# Features we ask for when the kernel has them. CMD_IOCTL_ENCODE tells newer
# kernels that we speak the encoded opcodes.
WANTED_FEATURES = lib.UBLK_F_CMD_IOCTL_ENCODE


@dataclasses.dataclass
class DeviceConfig:
    size: int
    algorithm: str = "lz4"
    store: str = "ram"
    queues: int = 1
    depth: int = 128
    dev_id: int = -1
    mem_limit: int = 0
    huge_threshold: int = DEFAULT_HUGE_THRESHOLD


def harden_process() -> None:
    """What a swap server needs before it serves a single page: its memory
    locked (on fault, so large reserved mappings cost only what is touched),
    never chosen by the OOM killer, and no garbage collector pauses."""
    if lib.mlockall(lib.MCL_CURRENT | lib.MCL_FUTURE | lib.MCL_ONFAULT) != 0:
        err = ffi.errno
        raise UserError(f"cannot lock the daemon's memory (mlockall): {os.strerror(err)}; "
                        "it needs CAP_IPC_LOCK or LimitMEMLOCK=infinity")
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("-1000")
    gc.disable()


class Daemon:
    def __init__(self, config: DeviceConfig, on_live=None, log_to_file: bool = False):
        self.config = config
        self.on_live = on_live or (lambda dev_id: None)
        self.log_to_file = log_to_file
        self.stop_requested = threading.Event()
        self.dev_id: int | None = None

    def _request_stop(self, signum, frame):
        self.stop_requested.set()

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        cfg = self.config
        store = make_store(cfg.store, cfg.size, codec_for(cfg.algorithm), cfg.huge_threshold)
        if cfg.mem_limit:
            store.set_mem_limit(cfg.mem_limit)
        harden_process()
        with Control() as ctrl:
            try:
                info = ctrl.add_device(cfg.dev_id, cfg.queues, cfg.depth, MAX_IO_BYTES,
                                       WANTED_FEATURES & ctrl.features)
            except ControlError as e:
                if e.errno == errno.EEXIST:
                    raise UserError(f"device /dev/ublkb{cfg.dev_id} already exists (busy)") from None
                raise UserError(f"the kernel refused to add the device: {e.strerror}") from None
            self.dev_id = info.dev_id
            try:
                self._serve(ctrl, info, store)
            finally:
                self._delete(ctrl)

    def _serve(self, ctrl: Control, info, store) -> None:
        cfg, dev_id = self.config, self.dev_id
        record = state.DeviceRecord(
            dev_id=dev_id, pid=os.getpid(), pid_start=psutil.Process().create_time(),
            size=cfg.size, store=cfg.store, algorithm=store.codec.name if cfg.store == "ram" else "-",
            queues=info.nr_hw_queues, depth=info.queue_depth,
            features=feature_names(info.flags))
        state.save(record)
        if self.log_to_file:
            redirect_output(state.log_path(dev_id))
        log.info("device %d: %d bytes, %d queue(s) x depth %d, store %s, kernel features %s",
                 dev_id, cfg.size, info.nr_hw_queues, info.queue_depth, cfg.store,
                 " ".join(feature_names(ctrl.features)))
        ctrl.set_params(dev_id, cfg.size, info.max_io_buf_bytes)

        cdev_fd = open_char_device(dev_id)
        fetch_op = ctrl.opcode(lib.UBLK_U_IO_FETCH_REQ, lib.UBLK_IO_FETCH_REQ)
        commit_op = ctrl.opcode(lib.UBLK_U_IO_COMMIT_AND_FETCH_REQ, lib.UBLK_IO_COMMIT_AND_FETCH_REQ)
        queues = [Queue(cdev_fd, q, info.queue_depth, info.max_io_buf_bytes, store,
                        cfg.size, fetch_op, commit_op) for q in range(info.nr_hw_queues)]
        admin = AdminServer(dev_id, self._admin_handlers(record, store, queues))
        started = False
        try:
            admin.start()
            for q in queues:
                q.start()
            for q in queues:
                q.opened.wait()
                if q.open_error:
                    raise UserError(f"cannot set up the I/O queue: {q.open_error.strerror}")
            ctrl.start(dev_id, os.getpid())
            started = True
            gc.freeze()         # start-up objects never need scanning again
            record.state = "live"
            state.save(record)
            log.info("device %d live as %s", dev_id, record.block_path)
            self.on_live(dev_id)
            while not self.stop_requested.wait(1.0):
                if not all(q.thread.is_alive() for q in queues):
                    log.error("a queue thread ended: stopping the device")
                    break
            log.info("stopping device %d", dev_id)
            record.state = "stopping"
            state.save(record)
        finally:
            admin.stop()
            if started:
                try:
                    ctrl.stop(dev_id)
                except ControlError as e:
                    log.error("STOP_DEV failed: %s", e)
            for q in queues:
                q.stop()
            for q in queues:
                if q.thread.is_alive():
                    q.thread.join(QUEUE_JOIN_SECONDS)
            os.close(cdev_fd)

    @staticmethod
    def _admin_handlers(record, store, queues) -> dict:
        def stat():
            io = {name: sum(q.counts[name] for q in queues) for name in IO_COUNTERS}
            return {"device": dataclasses.asdict(record), "mm_stat": store.stats(), "io_stat": io}

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

        return {"stat": stat, "set": set_, "compact": compact}

    def _delete(self, ctrl: Control) -> None:
        try:
            ctrl.delete(self.dev_id)
        except ControlError as e:
            log.error("DEL_DEV failed: %s", e)
        state.remove(self.dev_id)
        log.info("device %d deleted", self.dev_id)


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


def redirect_output(path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def configure_logging() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(threadName)s %(levelname)s %(message)s")


def spawn_detached(config: DeviceConfig) -> int:
    """Start a daemon in the background; return its device id once LIVE.

    Any failure before LIVE comes back through a pipe and is raised here as
    a UserError, so `create` reports it itself."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        _run_detached(config, w)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r, "r") as pipe:
        message = pipe.read().strip()
    kind, _, detail = message.partition(" ")
    if kind == "live":
        return int(detail)
    if kind == "error":
        raise UserError(detail)
    raise UserError("the daemon exited during start-up without saying why")


def _run_detached(config: DeviceConfig, report_fd: int) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.chdir("/")
    configure_logging()

    def report(text: str) -> None:
        nonlocal report_fd
        if report_fd is not None:
            os.write(report_fd, (text + "\n").encode())
            os.close(report_fd)
            report_fd = None

    code = 1
    try:
        Daemon(config, on_live=lambda dev_id: report(f"live {dev_id}"), log_to_file=True).run()
        code = 0
    except UserError as e:
        log.error("%s", e)
        report(f"error {e}")
    except BaseException as e:
        log.error("daemon failed: %s", "".join(traceback.format_exception(e)))
        report(f"error the daemon failed: {e!r}")
    finally:
        os._exit(code)
