"""The supervisor: owns one ublk device from ADD_DEV to DEL_DEV.

It adds the device, creates the store's arena (a memfd, for a store that
keeps one) and forks an I/O worker (worker.py) that serves the requests.
If the worker dies -- killed, crashed -- and the kernel offers user
recovery, the supervisor keeps the device and the arena: the kernel holds
new I/O and requeues what was in flight, the supervisor starts a new worker
on the same arena, and that worker ends the recovery with every page
intact. Teardown (SIGTERM, `delete`): the worker stops the device and
exits, then the supervisor deletes the device and frees the arena; under
systemd (`systemctl stop`) the supervisor first swaps off or unmounts it.

A supervisor can also take over a device another one left, arena and all
(Takeover): the one before it handed the device over -- `upgrade`
(SIGHUP) execs the code installed now in this same process; a `systemctl
restart` leaves the arena in systemd's file descriptor store -- or died,
and systemd kept the arena. What it finds is checked before anything is
touched: the device must exist, have no server, and fit the arena.

Its life is a small state machine, the states being those `list` shows:

    starting --worker live--> live --worker died, recoverable--> recovering
    taking-over --worker live--> live
    recovering --worker live--> live
    live --worker stopped (SIGTERM) or died, not recoverable--> stopping
    live --SIGHUP, or SIGTERM of a restart--> handing-over
    starting, recovering --worker could not start--> stopping (an error)

While the device has no server the kernel holds its I/O
(USER_RECOVERY_REISSUE): a dead worker or an upgrade costs readers latency,
never an error. If the whole daemon dies, under systemd the restarted one
takes the device over with the arena systemd kept; elsewhere nothing can
bring the pages back, and the guard (guard.py), forked before the first
worker, ends the held I/O. `--io-without-server fail` asks the kernel to
fail I/O instead whenever there is no server (USER_RECOVERY_FAIL_IO, 6.13);
`hold` holds it even after the whole daemon died (no guard), for whoever
keeps the arena.
"""
import dataclasses
import errno
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from trueno_ublk._native import lib
from trueno_ublk.base import procfs
from trueno_ublk.base.control import Control, ControlError, feature_names
from trueno_ublk.base.errors import UserError
from trueno_ublk.base.logs import redirect_output
from trueno_ublk.daemon.guard import start_guard
from trueno_ublk.daemon.report import Report
from trueno_ublk.daemon.takeover import Takeover, arena_name
from trueno_ublk.daemon.worker import HANDOVER_STATUS, Worker, harden_process
from trueno_ublk.devices import records
from trueno_ublk.devices.records import State
from trueno_ublk.stores import DEFAULT_HUGE_THRESHOLD, DEFAULT_STORE, STORES, check_arena, new_arena, store_name
from trueno_ublk.stores.policy import DEFAULT_ZRAM_ENTROPY, Policy
from trueno_ublk.systemd import service
from trueno_ublk.systemd.service import notify_systemd

log = logging.getLogger(__name__)

MAX_IO_BYTES = 128 << 10      # the largest request the kernel sends us
QUIESCE_WAIT_SECONDS = 30.0
FORMAT_SECONDS = 600.0          # mkfs of a large device under emulation
EXPORTER_STOP_SECONDS = 5.0
# The swapoffs/umounts before `systemctl stop` give up in time for the device
# to be stopped before the unit's TimeoutStopSec=60 kills the daemon.
RELEASE_SECONDS = 45.0
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
# With no server, I/O is held (REISSUE) or failed (FAIL_IO): see the top.
# QUIESCE (6.16) lets a worker hand the device over with nothing in flight.
RECOVERY_FEATURES = lib.UBLK_F_USER_RECOVERY | lib.UBLK_F_USER_RECOVERY_REISSUE
FAILING_RECOVERY_FEATURES = lib.UBLK_F_USER_RECOVERY | lib.UBLK_F_USER_RECOVERY_FAIL_IO
TAKEOVER_ENV = "TRUENO_UBLK_TAKEOVER"     # what an upgrade passes to the code it execs
SUCCESSOR = "import sys; from trueno_ublk.daemon.supervisor import main; sys.exit(main())"


@dataclasses.dataclass
class DeviceConfig:
    size: int
    algorithm: str = "lz4"
    store: str = DEFAULT_STORE
    queues: int = 1
    queue_threads: int = 1          # threads serving each queue; >1 needs PER_IO_DAEMON
    io_commands: str = "auto"       # auto, batch (BATCH_IO) or per-tag: settings.IO_COMMANDS
    depth: int = 128
    dev_id: int = -1
    mem_limit: int = 0
    huge_threshold: int = DEFAULT_HUGE_THRESHOLD
    policy: Policy = Policy()       # cold pages and entropy routing
    backing_dev: str = ""           # where pages are written back (stores/backing.py); empty: nowhere
    writeback_limit: int | None = None  # bytes writebacks may write, zram's writeback_limit; None: no limit
    zram_device: str = ""           # the kernel zram tier's device; empty: none
    zram_entropy: float = DEFAULT_ZRAM_ENTROPY  # bits of entropy a byte below which pages go there (8: all)
    recovery: bool = True
    io_without_server: str = "auto"     # auto, hold or fail (settings.IO_WITHOUT_SERVER): recovery_flags
    metrics_listen: str = ""        # HOST:PORT for GET /metrics; empty: off
    otlp_endpoint: str = ""         # collector URL for OTLP export (observe/otlp.py); empty: off
    otlp_interval: float = 60.0     # seconds between OTLP exports
    format_command: tuple[str, ...] = ()    # run on a new device before it is ready (--from-config)

    @classmethod
    def from_dict(cls, fields: dict) -> "DeviceConfig":
        """The config an upgrade passed (dataclasses.asdict of one), also
        from a daemon that spelled things as trueno-ublk did before: the
        store "ram", and zram_below for zram_entropy."""
        fields = dict(fields, policy=Policy(**fields["policy"]), store=store_name(fields["store"]))
        if "zram_below" in fields:
            fields["zram_entropy"] = fields.pop("zram_below")
        return cls(**fields)


class Supervisor:
    def __init__(self, config: DeviceConfig, on_live=None, log_to_file: bool = False,
                 takeover: Takeover | None = None):
        self.config = config
        self.on_live = on_live or (lambda dev_id: None)
        self.log_to_file = log_to_file
        self.takeover = takeover
        self.stop_requested = False
        self.handover: str = ""         # "upgrade" or "restart" once asked for
        self.worker_pid = 0
        self.dev_id: int | None = None
        self.record: records.DeviceRecord | None = None
        self.exporter: subprocess.Popen | None = None     # OTLP export (observe/otlp.py), once live
        self.fd_store = False           # systemd keeps the arena across our restarts
        self.releasing = False          # swapoff/umount under way before a stop
        self.guard_pid = takeover.guard_pid if takeover is not None else 0     # guard.py; 0: none

    def _request_stop(self, signum, frame):
        if signum == signal.SIGTERM and self.fd_store:
            # The stop half of `systemctl restart`: leave the device, and the
            # arena kept by systemd, to the daemon it starts next.
            if service.restart_queued():
                self._request_handover("restart")
                return
            # `systemctl stop`: let go of the swap or mount on the device
            # first, while the worker still serves the pages that brings back.
            if not self.releasing and self.record is not None and self.record.state is State.LIVE:
                self.releasing = True
                threading.Thread(target=self._release_then_stop, daemon=True).start()
                return
        self._stop_worker()

    def _stop_worker(self) -> None:
        self.stop_requested = True
        self._signal_worker(signal.SIGTERM)

    def _release_then_stop(self) -> None:
        """What the swap or mount unit's stop did when it was bound to the
        service: it no longer is, since systemd would then also stop it for
        a restart of the service (swapoff under memory pressure, to no end)
        and when the daemon dies (a swapoff waiting on I/O that only the
        restarted daemon can serve, and the restart ordered after it)."""
        deadline = time.monotonic() + RELEASE_SECONDS      # for all of them together
        for command in procfs.users_of(self.record.block_path):
            failure = run_tool(command, max(deadline - time.monotonic(), 0.1))
            if failure is None:
                log.info("%s before the stop", " ".join(command))
            else:
                log.error("%s failed, stopping the device under it: %s", " ".join(command), failure)
        self._stop_worker()

    def _request_upgrade(self, signum, frame):
        self._request_handover("upgrade")

    def _request_handover(self, why: str) -> None:
        stopping = self.stop_requested or self.releasing
        if stopping or self.handover or self.record is None or self.record.state is not State.LIVE:
            log.warning("a %s was asked for while the device is %s: ignored", why,
                        State.STOPPING if stopping else self.record.state if self.record else State.STARTING)
            return
        self.handover = why
        self._signal_worker(signal.SIGUSR1)

    def _signal_worker(self, signum: int) -> None:
        if self.worker_pid:
            try:
                os.kill(self.worker_pid, signum)
            except ProcessLookupError:
                pass

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        signal.signal(signal.SIGHUP, self._request_upgrade)
        cfg = self.config
        harden_process()
        self.fd_store = service.fd_store_size() > 0
        with Control() as ctrl:
            if self.takeover is not None:
                info = self._check_takeover(ctrl)
                arena_fd = self.takeover.arena_fd
            else:
                info = self._add(ctrl)
                arena_fd = new_arena(cfg.store, cfg.size)
            self.dev_id = cfg.dev_id = info.dev_id
            try:
                if arena_fd is not None and self.fd_store and self.takeover is None:
                    service.store_fd(arena_fd, arena_name(self.dev_id))
                self._supervise(ctrl, info, arena_fd)
            finally:
                self._stop_exporter()
                if not self.handover:
                    notify_systemd("STOPPING=1")
                    self._delete(ctrl)
                    self._dismiss_guard()
                    if self.fd_store:
                        service.drop_stored_fd(arena_name(self.dev_id))
        if self.handover == "upgrade":
            self._exec_successor(arena_fd)
        if arena_fd is not None:
            os.close(arena_fd)

    def _add(self, ctrl: Control):
        cfg = self.config
        flags = WANTED_FEATURES & ctrl.features
        if self._batch_io(ctrl.features):   # one FETCH takes a queue's tags: no per-tag daemons
            flags = flags & ~lib.UBLK_F_PER_IO_DAEMON | lib.UBLK_F_BATCH_IO
        flags |= recovery_flags(ctrl.features, cfg)
        if flags & lib.UBLK_F_BATCH_IO:
            # The kernel's QUIESCE_DEV fails a batched device's held reads
            # (7.3.4): it cancels the fetch commands through the stop path
            # (ublk_batch_cancel_queue), which sets the queue's force_abort,
            # and ublk_prep_req fails with EIO rather than requeue. Left as
            # after a crash, the device reissues them.
            flags &= ~lib.UBLK_F_QUIESCE
        try:
            return ctrl.add_device(cfg.dev_id, cfg.queues, cfg.depth, MAX_IO_BYTES, flags)
        except ControlError as e:
            if e.errno == errno.EEXIST:
                raise UserError(f"device /dev/ublkb{cfg.dev_id} already exists (busy)") from None
            raise UserError(f"the kernel refused to add the device: {e.strerror}") from None

    def _check_takeover(self, ctrl: Control):
        """The device to take over, checked before anything is touched: it
        exists, recovery can serve it again, no server has it, no other
        daemon's record claims it, and the arena holds its pages."""
        cfg, dev_id = self.config, self.config.dev_id
        name = f"/dev/ublkb{dev_id}"
        record = records.load(dev_id)
        if record is not None and record.pid != os.getpid() and record.daemon_alive():
            raise UserError(f"{name} belongs to the running daemon {record.pid}: not taking it over")
        deadline = time.monotonic() + QUIESCE_WAIT_SECONDS
        while True:
            try:
                info = ctrl.info(dev_id)
            except ControlError as e:
                if e.errno == errno.ENODEV:
                    raise UserError(f"{name} is gone: there is no device to take over") from None
                raise UserError(f"cannot read {name}'s state: {e.strerror}") from None
            if not info.flags & lib.UBLK_F_USER_RECOVERY:
                raise UserError(f"{name} was made without user recovery: no new server can take it over")
            if info.state in (lib.UBLK_S_DEV_QUIESCED, lib.UBLK_S_DEV_FAIL_IO):
                break
            if info.state == lib.UBLK_S_DEV_DEAD:
                raise UserError(f"{name} is stopped: there is nothing to take over")
            if procfs.process_start(info.ublksrv_pid) is not None:
                raise UserError(f"{name} is served by process {info.ublksrv_pid}: not taking it over")
            if time.monotonic() > deadline:
                raise UserError(f"the kernel did not release {name} from its dead server "
                                f"within {QUIESCE_WAIT_SECONDS:.0f}s")
            time.sleep(0.1)     # its dead server's files are still being released
        cfg.size = ctrl.size(dev_id)
        try:
            check_arena(cfg.store, self.takeover.arena_fd, cfg.size, cfg.algorithm)
        except ValueError as e:
            raise UserError(f"{name}: {e}: not taking it over") from None
        return info

    def _exec_successor(self, arena_fd: int | None) -> None:
        """Become the trueno-ublk installed now (same pid, so systemd's
        MAINPID and the device's record stay true), passing it the device."""
        takeover = {"config": dataclasses.asdict(self.config), "arena_fd": arena_fd,
                    "takeovers": self.record.takeovers, "guard_pid": self.guard_pid}
        if arena_fd is not None:
            os.set_inheritable(arena_fd, True)
        log.info("device %d: handing over to the trueno-ublk installed now", self.dev_id)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        env = dict(os.environ, **{TAKEOVER_ENV: json.dumps(takeover)})
        os.execve(sys.executable, [sys.executable, "-c", SUCCESSOR], env)

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
        self.record.state, self.record.worker_pid = new, worker_pid
        records.save(self.record)
        if notify:
            notify_systemd(notify)

    def _supervise(self, ctrl: Control, info, arena_fd: int | None) -> None:
        cfg, dev_id = self.config, self.dev_id
        if cfg.queue_threads > 1 and not info.flags & lib.UBLK_F_PER_IO_DAEMON:
            raise UserError("--queue-threads above 1 needs Linux 6.16 or newer (UBLK_F_PER_IO_DAEMON)")
        self.record = records.DeviceRecord(
            dev_id=dev_id, pid=os.getpid(), pid_start=procfs.process_start(os.getpid()),
            size=cfg.size, store=cfg.store, algorithm=cfg.algorithm if STORES[cfg.store].codec else "-",
            queues=info.nr_hw_queues, depth=info.queue_depth, max_io_bytes=info.max_io_buf_bytes,
            queue_threads=cfg.queue_threads,
            features=feature_names(info.flags))
        recoverable = bool(info.flags & lib.UBLK_F_USER_RECOVERY)
        if self.takeover is not None:
            self.record.takeovers = self.takeover.takeovers + 1
            self.record.state = State.TAKING_OVER
        records.save(self.record)
        if self.log_to_file:
            redirect_output(records.log_path(dev_id))
        if recoverable and not self.guard_pid and cfg.io_without_server == "auto" and not self.fd_store:
            # Under systemd the restarted daemon takes the device over instead.
            self.guard_pid = start_guard(dev_id)
        log.info("device %d: %d bytes, %d queue(s) x depth %d, store %s, kernel features %s",
                 dev_id, cfg.size, info.nr_hw_queues, info.queue_depth, cfg.store,
                 " ".join(feature_names(ctrl.features)))
        if self.takeover is None:
            ctrl.set_params(dev_id, cfg.size, info.max_io_buf_bytes)
            current = State.STARTING
        else:
            log.info("device %d: taking it over (takeover %d), every page kept", dev_id, self.record.takeovers)
            self._start_recovery(ctrl)
            current = State.TAKING_OVER
        first = True
        while current not in (State.STOPPING, State.HANDING_OVER) and not self.stop_requested:
            pid, report = self._start_worker(arena_fd, recovering=current is not State.STARTING)
            if report is None or report[0] != "live":
                status = self._wait_worker(pid)
                if report is not None:
                    raise UserError(report[1])
                if current is State.STARTING:
                    raise UserError(f"the I/O worker {describe_exit(status)} during start-up")
                log.error("worker %d %s: the device is lost", pid, describe_exit(status))
                break
            if first:
                log.info("device %d live as %s (worker %d)", dev_id, self.record.block_path, pid)
                if self.takeover is None and cfg.format_command:
                    self._format(pid)
                self._enter(State.LIVE, pid, f"READY=1\nSTATUS=live\nMAINPID={os.getpid()}")
                self._start_exporter()
                self.on_live(dev_id)
                first = False
            else:
                log.info("device %d recovered: worker %d serves it", dev_id, pid)
                self._enter(State.LIVE, pid, "STATUS=live")
            status = self._wait_worker(pid)
            if self.handover:
                # Handed over (HANDOVER_STATUS), or died meanwhile: either
                # way the kernel now holds the device for a new server.
                log.info("worker %d %s: device %d handed over (%s)", pid, describe_exit(status),
                         dev_id, self.handover)
                current = State.HANDING_OVER
            elif self.stop_requested or status == 0:
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
        if current is State.HANDING_OVER:
            self.record.size = ctrl.size(dev_id)
            self._enter(State.HANDING_OVER, notify=f"STATUS=handing over ({self.handover})")
        else:
            self._enter(State.STOPPING)

    def _format(self, worker_pid: int) -> None:
        """Make the new device usable (mkswap, mkfs) before it is announced:
        the swap or mount unit ordered after the service finds it ready."""
        command = self.config.format_command
        failure = run_tool(command, FORMAT_SECONDS)
        if failure is None:
            log.info("formatted: %s", " ".join(command))
            return
        self._stop_worker()
        self._wait_worker(worker_pid)
        raise UserError(f"{' '.join(command)} failed: {failure}")

    def _start_exporter(self) -> None:
        """The OTLP export's own process (otlp.main), if asked for: it
        inherits our stdout and stderr (the device's log), not our locked
        memory (exec), and ends with us (PDEATHSIG) if we are killed."""
        cfg = self.config
        if cfg.otlp_endpoint:
            self.exporter = subprocess.Popen([sys.executable, "-m", "trueno_ublk.observe.otlp", str(self.dev_id),
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
            worker = Worker(self.config, self.record, arena_fd, recovering, arena_kept=self.fd_store)
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

    def _dismiss_guard(self) -> None:
        """The device is deleted: nothing is left for the guard to end."""
        if self.guard_pid:
            os.kill(self.guard_pid, signal.SIGKILL)
            os.waitpid(self.guard_pid, 0)
            self.guard_pid = 0

    def _delete(self, ctrl: Control) -> None:
        try:
            ctrl.delete(self.dev_id)
        except ControlError as e:
            log.error("DEL_DEV failed: %s", e)
        records.remove(self.dev_id)
        log.info("device %d deleted", self.dev_id)


def run_tool(command: list[str], timeout: float) -> str | None:
    """Run mkswap, swapoff and the like: None once it succeeded, else why
    not in one line (the last of its stderr)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if done.returncode == 0:
        return None
    return (done.stderr.strip().splitlines() or ["no reason given"])[-1]


def recovery_flags(kernel_features: int, cfg: DeviceConfig) -> int:
    """How the device behaves while it has no server (see the top): held,
    unless --io-without-server fail asks for failed."""
    can_fail = bool(kernel_features & lib.UBLK_F_USER_RECOVERY_FAIL_IO)
    if cfg.io_without_server == "fail" and not can_fail:
        raise UserError("--io-without-server fail needs Linux 6.13 or newer (UBLK_F_USER_RECOVERY_FAIL_IO)")
    if not cfg.recovery or kernel_features & RECOVERY_FEATURES != RECOVERY_FEATURES:
        return 0
    quiesce = kernel_features & lib.UBLK_F_QUIESCE
    if cfg.io_without_server == "fail":
        return FAILING_RECOVERY_FEATURES | quiesce
    return RECOVERY_FEATURES | quiesce


def describe_exit(status: int) -> str:
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == HANDOVER_STATUS:
        return "handed the device over"
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.WEXITSTATUS(status)}"


def main() -> int:
    """The code an upgrade execs (Supervisor._exec_successor): the same
    supervisor process, now running the trueno-ublk installed today."""
    import prctl

    from trueno_ublk.base.logs import configure_logging
    prctl.set_name("trueno-ublk")       # as `pkill trueno-ublk` and `ps` knew it before
    configure_logging()
    passed = json.loads(os.environ.pop(TAKEOVER_ENV))
    config = DeviceConfig.from_dict(passed["config"])
    arena_fd = passed["arena_fd"]
    if arena_fd is not None:
        os.set_inheritable(arena_fd, False)
    try:
        # An older daemon passed no guard: this one starts one.
        Supervisor(config, takeover=Takeover(arena_fd, passed["takeovers"], passed.get("guard_pid", 0))).run()
    except UserError as e:
        log.error("%s", e)
        return 1
    return 0

