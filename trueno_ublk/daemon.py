"""The daemon: owns one ublk device from ADD_DEV to DEL_DEV.

It is a small supervisor. It adds the device, creates the store's arena (a
memfd), and forks an I/O worker (worker.py) that serves the requests. If
the worker dies -- killed, crashed -- and the kernel offers user recovery,
the daemon keeps the device and the arena: the kernel holds new I/O and
requeues what was in flight, the daemon starts a new worker on the same
arena, and that worker ends the recovery with every page intact. Teardown
(SIGTERM, `delete`): the worker stops the device and exits, then the daemon
deletes the device and frees the arena.
"""
import dataclasses
import errno
import logging
import os
import signal
import socket
import sys
import time
import traceback

from trueno_ublk import procfs, state
from trueno_ublk._shim import lib
from trueno_ublk.control import Control, ControlError, feature_names
from trueno_ublk.errors import UserError
from trueno_ublk.stores import DEFAULT_HUGE_THRESHOLD, STORES
from trueno_ublk.stores.ram import new_arena
from trueno_ublk.worker import Worker, harden_process

log = logging.getLogger(__name__)

MAX_IO_BYTES = 128 << 10      # per tag: 16 MiB of locked buffers per queue at depth 128
QUIESCE_WAIT_SECONDS = 30.0
# Features we ask for when the kernel has them. CMD_IOCTL_ENCODE tells newer
# kernels that we speak the encoded opcodes. Recovery with REISSUE: requests
# a dead worker held are served again by its successor; writing a page twice
# is harmless for a RAM store.
WANTED_FEATURES = lib.UBLK_F_CMD_IOCTL_ENCODE
RECOVERY_FEATURES = lib.UBLK_F_USER_RECOVERY | lib.UBLK_F_USER_RECOVERY_REISSUE


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
    recovery: bool = True
    metrics_listen: str = ""        # HOST:PORT for GET /metrics; empty: off


def notify_systemd(message: str) -> None:
    """sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(message.encode(), path)
    except OSError as e:
        log.warning("cannot notify systemd: %s", e)


class Daemon:
    def __init__(self, config: DeviceConfig, on_live=None, log_to_file: bool = False):
        self.config = config
        self.on_live = on_live or (lambda dev_id: None)
        self.log_to_file = log_to_file
        self.stop_requested = False
        self.worker_pid = 0
        self.dev_id: int | None = None

    def _request_stop(self, signum, frame):
        self.stop_requested = True
        if self.worker_pid:
            try:
                os.kill(self.worker_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        cfg = self.config
        harden_process()
        with Control() as ctrl:
            flags = WANTED_FEATURES & ctrl.features
            if cfg.recovery and ctrl.features & RECOVERY_FEATURES == RECOVERY_FEATURES:
                flags |= RECOVERY_FEATURES
            try:
                info = ctrl.add_device(cfg.dev_id, cfg.queues, cfg.depth, MAX_IO_BYTES, flags)
            except ControlError as e:
                if e.errno == errno.EEXIST:
                    raise UserError(f"device /dev/ublkb{cfg.dev_id} already exists (busy)") from None
                raise UserError(f"the kernel refused to add the device: {e.strerror}") from None
            self.dev_id = info.dev_id
            arena_fd = None
            try:
                if STORES[cfg.store].arena:
                    arena_fd = new_arena(cfg.size)
                self._supervise(ctrl, info, arena_fd)
            finally:
                notify_systemd("STOPPING=1")
                self._delete(ctrl)
                if arena_fd is not None:
                    os.close(arena_fd)

    def _supervise(self, ctrl: Control, info, arena_fd: int | None) -> None:
        cfg, dev_id = self.config, self.dev_id
        record = state.DeviceRecord(
            dev_id=dev_id, pid=os.getpid(), pid_start=procfs.process_start(os.getpid()),
            size=cfg.size, store=cfg.store, algorithm=cfg.algorithm if STORES[cfg.store].codec else "-",
            queues=info.nr_hw_queues, depth=info.queue_depth, max_io_bytes=info.max_io_buf_bytes,
            features=feature_names(info.flags))
        recoverable = bool(info.flags & lib.UBLK_F_USER_RECOVERY)
        state.save(record)
        if self.log_to_file:
            redirect_output(state.log_path(dev_id))
        log.info("device %d: %d bytes, %d queue(s) x depth %d, store %s, kernel features %s",
                 dev_id, cfg.size, info.nr_hw_queues, info.queue_depth, cfg.store,
                 " ".join(feature_names(ctrl.features)))
        ctrl.set_params(dev_id, cfg.size, info.max_io_buf_bytes)

        recovering = False
        while not self.stop_requested:
            pid, message = self._start_worker(record, arena_fd, recovering)
            if message == "live":
                record.state, record.worker_pid = "live", pid
                state.save(record)
                if recovering:
                    log.info("device %d recovered: worker %d serves it", dev_id, pid)
                    notify_systemd("STATUS=live")
                else:
                    log.info("device %d live as %s (worker %d)", dev_id, record.block_path, pid)
                    notify_systemd(f"READY=1\nSTATUS=live\nMAINPID={os.getpid()}")
                    self.on_live(dev_id)
            status = self._wait_worker(pid)
            if message.startswith("error "):
                raise UserError(message[6:])
            if message != "live" and not recovering:
                raise UserError(f"the I/O worker {describe_exit(status)} during start-up")
            if self.stop_requested or status == 0:
                break
            if not recoverable or message != "live":       # no retrying a worker that cannot start
                log.error("worker %d %s: the device is lost", pid, describe_exit(status))
                break
            log.error("worker %d %s: recovering the device", pid, describe_exit(status))
            record.state, record.worker_pid = "recovering", 0
            record.recoveries += 1
            state.save(record)
            notify_systemd("STATUS=recovering")
            self._start_recovery(ctrl)
            recovering = True
        record.state = "stopping"
        state.save(record)

    def _start_worker(self, record, arena_fd, recovering: bool) -> tuple[int, str]:
        """Fork a worker; returns its pid and what it reported ("live",
        "error ...", or "" if it died first)."""
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            # Hold nothing of the daemon's: not its control ring, and not the
            # pipe `create` waits on, which must close when the daemon reports.
            keep = sorted({w, arena_fd} - {None})
            for low, high in zip([3] + [k + 1 for k in keep], keep + [os.sysconf("SC_OPEN_MAX")], strict=True):
                os.closerange(low, high)
            _worker_main(Worker(self.config, record, arena_fd, recovering), w)
        os.close(w)
        self.worker_pid = pid
        if self.stop_requested:         # a SIGTERM that came before the pid was known
            os.kill(pid, signal.SIGTERM)
        with os.fdopen(r, "r") as pipe:
            return pid, pipe.read().strip()

    def _wait_worker(self, pid: int) -> int:
        _, status = os.waitpid(pid, 0)
        self.worker_pid = 0
        return status

    def _start_recovery(self, ctrl: Control) -> None:
        """Wait until the kernel has quiesced the device, then open recovery."""
        deadline = time.monotonic() + QUIESCE_WAIT_SECONDS
        while True:
            try:
                if ctrl.info(self.dev_id).state in (lib.UBLK_S_DEV_QUIESCED, lib.UBLK_S_DEV_FAIL_IO):
                    ctrl.start_recovery(self.dev_id)
                    return
            except ControlError as e:
                if e.errno != errno.EBUSY:
                    raise UserError(f"cannot recover the device: {e.strerror}") from None
            if self.stop_requested:
                return              # the device is being deleted anyway
            if time.monotonic() > deadline:
                raise UserError("cannot recover the device: the kernel did not quiesce it")
            time.sleep(0.1)

    def _delete(self, ctrl: Control) -> None:
        try:
            ctrl.delete(self.dev_id)
        except ControlError as e:
            log.error("DEL_DEV failed: %s", e)
        state.remove(self.dev_id)
        log.info("device %d deleted", self.dev_id)


def _worker_main(worker: Worker, report_fd: int) -> None:
    """The forked worker's whole life; never returns into the daemon's code."""
    def report(text: str) -> None:
        nonlocal report_fd
        if report_fd is not None:
            os.write(report_fd, (text + "\n").encode())
            os.close(report_fd)
            report_fd = None

    code = 1
    try:
        code = worker.run(report)
    except UserError as e:
        log.error("%s", e)
        report(f"error {e}")
    except BaseException as e:
        log.error("worker failed: %s", "".join(traceback.format_exception(e)))
        report(f"error the I/O worker failed: {e!r}")
    finally:
        os._exit(code)


def describe_exit(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.WEXITSTATUS(status)}"


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
