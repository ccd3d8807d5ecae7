"""The supervisor: owns one ublk device from ADD_DEV to DEL_DEV.

It adds the device, creates the store's arena (a memfd, for a store that
keeps one) and forks an I/O worker (worker.py) that serves the requests.
If the worker dies -- killed, crashed -- and the kernel offers user
recovery, the supervisor keeps the device and the arena: the kernel holds
new I/O and requeues what was in flight, the supervisor starts a new worker
on the same arena, and that worker ends the recovery with every page
intact. Teardown (SIGTERM, `delete`): the worker stops the device and
exits, then the supervisor deletes the device and frees the arena.

Its life is a small state machine, the states being those `list` shows:

    starting --worker live--> live --worker died, recoverable--> recovering
    recovering --worker live--> live
    live --worker stopped (SIGTERM) or died, not recoverable--> stopping
    starting, recovering --worker could not start--> stopping (an error)
"""
import dataclasses
import enum
import errno
import logging
import os
import signal
import subprocess
import sys
import time

from trueno_ublk import procfs, state
from trueno_ublk._native import lib
from trueno_ublk.control import Control, ControlError, feature_names
from trueno_ublk.errors import UserError
from trueno_ublk.policy import Policy
from trueno_ublk.report import Report
from trueno_ublk.service import notify_systemd, redirect_output
from trueno_ublk.stores import DEFAULT_HUGE_THRESHOLD, STORES
from trueno_ublk.stores.ram import new_arena
from trueno_ublk.worker import Worker, harden_process

log = logging.getLogger(__name__)

MAX_IO_BYTES = 128 << 10      # the largest request the kernel sends us
QUIESCE_WAIT_SECONDS = 30.0
EXPORTER_STOP_SECONDS = 5.0
# Features we ask for when the kernel has them. CMD_IOCTL_ENCODE tells newer
# kernels that we speak the encoded opcodes. USER_COPY (6.5): we copy each
# request's data ourselves (pread/pwrite on /dev/ublkcN) through one buffer
# per serving thread, instead of the kernel copying it into a locked buffer
# per tag (depth x MAX_IO_BYTES: 16 MiB a queue at depth 128), which a
# machine short of memory would pay for. NO_AUTO_PART_SCAN (7.0): a swap
# device or a scratch filesystem has no partition table to look for.
# SAFE_STOP_DEV (7.0): `delete` stops the device only if nobody has it open.
# Recovery with REISSUE: requests a dead worker held are served again by
# its successor; writing a page twice is harmless for a RAM store.
# BATCH_IO (7.0) is chosen apart, by --io-commands (Supervisor._batch_io).
WANTED_FEATURES = (lib.UBLK_F_CMD_IOCTL_ENCODE | lib.UBLK_F_USER_COPY | lib.UBLK_F_NO_AUTO_PART_SCAN
                   | lib.UBLK_F_SAFE_STOP_DEV | lib.UBLK_F_UPDATE_SIZE | lib.UBLK_F_PER_IO_DAEMON)
RECOVERY_FEATURES = lib.UBLK_F_USER_RECOVERY | lib.UBLK_F_USER_RECOVERY_REISSUE


class State(enum.Enum):
    STARTING = "starting"
    LIVE = "live"
    RECOVERING = "recovering"
    STOPPING = "stopping"


@dataclasses.dataclass
class DeviceConfig:
    size: int
    algorithm: str = "lz4"
    store: str = "ram"
    queues: int = 1
    queue_threads: int = 1          # threads serving each queue; >1 needs PER_IO_DAEMON
    io_commands: str = "auto"       # auto, batch (BATCH_IO) or per-tag: cli.IO_COMMANDS
    depth: int = 128
    dev_id: int = -1
    mem_limit: int = 0
    huge_threshold: int = DEFAULT_HUGE_THRESHOLD
    policy: Policy = Policy()       # cold pages and entropy routing
    recovery: bool = True
    metrics_listen: str = ""        # HOST:PORT for GET /metrics; empty: off
    otlp_endpoint: str = ""         # collector URL for OTLP export (otlp.py); empty: off
    otlp_interval: float = 60.0     # seconds between OTLP exports


class Supervisor:
    def __init__(self, config: DeviceConfig, on_live=None, log_to_file: bool = False):
        self.config = config
        self.on_live = on_live or (lambda dev_id: None)
        self.log_to_file = log_to_file
        self.stop_requested = False
        self.worker_pid = 0
        self.dev_id: int | None = None
        self.record: state.DeviceRecord | None = None
        self.exporter: subprocess.Popen | None = None     # OTLP export (otlp.py), once live

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
            if self._batch_io(ctrl.features):   # one FETCH takes a queue's tags: no per-tag daemons
                flags = flags & ~lib.UBLK_F_PER_IO_DAEMON | lib.UBLK_F_BATCH_IO
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
                self._stop_exporter()
                self._delete(ctrl)
                if arena_fd is not None:
                    os.close(arena_fd)

    def _batch_io(self, kernel_features: int) -> bool:
        """Whether the device's I/O commands are to be batched (UBLK_F_BATCH_IO)."""
        cfg = self.config
        batch = lib.UBLK_F_BATCH_IO | lib.UBLK_F_USER_COPY
        if cfg.io_commands == "batch" and kernel_features & batch != batch:
            raise UserError("--io-commands batch needs Linux 7.0 or newer (UBLK_F_BATCH_IO)")
        # Batched commands leave a queue's tags to one thread (the kernel
        # hands them to one FETCH), so more threads a queue mean per tag.
        wanted = cfg.io_commands == "batch" or (cfg.io_commands == "auto" and cfg.queue_threads == 1)
        return wanted and kernel_features & batch == batch

    def _enter(self, new: State, worker_pid: int = 0, notify: str = "") -> None:
        self.record.state, self.record.worker_pid = new.value, worker_pid
        state.save(self.record)
        if notify:
            notify_systemd(notify)

    def _supervise(self, ctrl: Control, info, arena_fd: int | None) -> None:
        cfg, dev_id = self.config, self.dev_id
        if cfg.queue_threads > 1 and not info.flags & lib.UBLK_F_PER_IO_DAEMON:
            raise UserError("--queue-threads above 1 needs Linux 6.16 or newer (UBLK_F_PER_IO_DAEMON)")
        self.record = state.DeviceRecord(
            dev_id=dev_id, pid=os.getpid(), pid_start=procfs.process_start(os.getpid()),
            size=cfg.size, store=cfg.store, algorithm=cfg.algorithm if STORES[cfg.store].codec else "-",
            queues=info.nr_hw_queues, depth=info.queue_depth, max_io_bytes=info.max_io_buf_bytes,
            queue_threads=cfg.queue_threads,
            features=feature_names(info.flags))
        recoverable = bool(info.flags & lib.UBLK_F_USER_RECOVERY)
        state.save(self.record)
        if self.log_to_file:
            redirect_output(state.log_path(dev_id))
        log.info("device %d: %d bytes, %d queue(s) x depth %d, store %s, kernel features %s",
                 dev_id, cfg.size, info.nr_hw_queues, info.queue_depth, cfg.store,
                 " ".join(feature_names(ctrl.features)))
        ctrl.set_params(dev_id, cfg.size, info.max_io_buf_bytes)

        current = State.STARTING
        while current is not State.STOPPING and not self.stop_requested:
            pid, report = self._start_worker(arena_fd, recovering=current is State.RECOVERING)
            if report is None or report[0] != "live":
                status = self._wait_worker(pid)
                if report is not None:
                    raise UserError(report[1])
                if current is State.STARTING:
                    raise UserError(f"the I/O worker {describe_exit(status)} during start-up")
                log.error("worker %d %s: the device is lost", pid, describe_exit(status))
                break
            if current is State.STARTING:
                log.info("device %d live as %s (worker %d)", dev_id, self.record.block_path, pid)
                self._enter(State.LIVE, pid, f"READY=1\nSTATUS=live\nMAINPID={os.getpid()}")
                self._start_exporter()
                self.on_live(dev_id)
            else:
                log.info("device %d recovered: worker %d serves it", dev_id, pid)
                self._enter(State.LIVE, pid, "STATUS=live")
            status = self._wait_worker(pid)
            if self.stop_requested or status == 0:
                current = State.STOPPING
            elif not recoverable:
                log.error("worker %d %s: the device is lost", pid, describe_exit(status))
                current = State.STOPPING
            else:
                log.error("worker %d %s: recovering the device", pid, describe_exit(status))
                self.record.recoveries += 1
                # `resize` may have changed the size since: the kernel's is
                # the one the next worker serves (the arena's is never less).
                cfg.size = self.record.size = ctrl.size(dev_id)
                self._enter(State.RECOVERING, notify="STATUS=recovering")
                self._start_recovery(ctrl)
                current = State.RECOVERING
        self._enter(State.STOPPING)

    def _start_exporter(self) -> None:
        """The OTLP export's own process (otlp.main), if asked for: it
        inherits our stdout and stderr (the device's log), not our locked
        memory (exec), and ends with us (PDEATHSIG) if we are killed."""
        cfg = self.config
        if cfg.otlp_endpoint:
            self.exporter = subprocess.Popen([sys.executable, "-m", "trueno_ublk.otlp", str(self.dev_id),
                                              cfg.otlp_endpoint, str(cfg.otlp_interval), str(os.getpid())])

    def _stop_exporter(self) -> None:
        if self.exporter is None:
            return
        self.exporter.terminate()       # its last export takes otlp.STOP_SECONDS at most
        try:
            self.exporter.wait(EXPORTER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.exporter.kill()
            self.exporter.wait()

    def _start_worker(self, arena_fd, recovering: bool):
        """Fork a worker; returns its pid and its report (None if it died first)."""
        report = Report()
        pid = os.fork()
        if pid == 0:
            # Hold nothing of the supervisor's: not its control ring, and not
            # the pipe `create` waits on, which must close when it reports.
            keep = sorted({report.write_fd, arena_fd} - {None})
            for low, high in zip([3] + [k + 1 for k in keep], keep + [os.sysconf("SC_OPEN_MAX")],
                                 strict=True):
                os.closerange(low, high)
            worker = Worker(self.config, self.record, arena_fd, recovering)
            report.run_as_child("the I/O worker", lambda: worker.run(report))
        self.worker_pid = pid
        if self.stop_requested:         # a SIGTERM that came before the pid was known
            os.kill(pid, signal.SIGTERM)
        return pid, report.read()

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


def describe_exit(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.WEXITSTATUS(status)}"
