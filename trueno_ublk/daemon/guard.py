"""The guard: ends the held I/O of a device whose whole daemon died.

A device is made so that the kernel holds its I/O while it has no server
(USER_RECOVERY_REISSUE): a dead worker or an upgrade then costs readers
latency, not errors. But if the supervisor dies too, nothing brings the
pages back (without systemd nothing else holds the arena), and the held I/O
would wait forever. The supervisor forks this process first: it holds no
device file and no pages, only a pidfd of its supervisor, and sleeps on it.
When the supervisor is gone it waits for the device to lose its last server
(a worker outliving its supervisor stops the device itself), stops the
device -- the kernel then fails what it held (verified on 6.12 and 7.3) --
and records the device as lost, which `list` shows with what to do.

It is named apart (GUARD_NAME), so that `pkill trueno-ublk` leaves it to do
its work; its memory is locked and the OOM killer spares it as it spares
the daemon (harden_process), since it must outlive the daemon.
"""
import errno
import logging
import os
import select
import signal
import time

import prctl

from trueno_ublk._native import lib
from trueno_ublk.base import procfs
from trueno_ublk.base.control import Control, ControlError
from trueno_ublk.daemon.worker import harden_process
from trueno_ublk.devices import records
from trueno_ublk.devices.records import State

log = logging.getLogger(__name__)

GUARD_NAME = "trueno-guard"
# A worker that outlived its supervisor stops the device within a second or
# two; one that has not after this long is stuck, and is killed.
ORPHAN_WORKER_SECONDS = 15.0
POLL_SECONDS = 0.1


def start_guard(dev_id: int) -> int:
    """Fork the guard of this supervisor's device (its record saved);
    returns the guard's pid. The pidfd is opened here, before the fork, so
    that it names this process even if it dies before the guard runs."""
    pidfd = os.pidfd_open(os.getpid())
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.closerange(3, pidfd)
            os.closerange(pidfd + 1, os.sysconf("SC_OPEN_MAX"))
            status = _guard(dev_id, pidfd)
        except Exception:                   # noqa: BLE001 -- a child must never return into its parent's code
            log.exception("the guard of device %d failed", dev_id)
        finally:
            os._exit(status)
    os.close(pidfd)
    return pid


def _guard(dev_id: int, supervisor_fd: int) -> int:
    prctl.set_name(GUARD_NAME)
    # The supervisor's handlers are not ours: a terminal's ^C or hang-up
    # is for the daemon; the supervisor dismisses the guard with SIGKILL.
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    harden_process()
    supervisor = records.load(dev_id).pid
    poller = select.poll()
    poller.register(supervisor_fd, select.POLLIN)
    while not poller.poll():
        pass
    log.error("device %d: its daemon (pid %d) died; ending the I/O it held", dev_id, supervisor)
    _end_io(dev_id, supervisor)
    return 0


def _end_io(dev_id: int, supervisor: int) -> None:
    """Once no server is left, stop the device (its held I/O fails) and
    record it as lost -- unless it is gone or no longer this daemon's."""
    deadline = time.monotonic() + ORPHAN_WORKER_SECONDS
    with Control() as ctrl:
        while True:
            record = records.load(dev_id)
            if record is None or record.pid != supervisor:
                return          # deleted before the supervisor ended, or another daemon's now
            try:
                info = ctrl.info(dev_id)
            except ControlError as e:
                if e.errno == errno.ENODEV:
                    return
                raise
            server_alive = info.ublksrv_pid > 0 and procfs.process_start(info.ublksrv_pid) is not None
            if info.state == lib.UBLK_S_DEV_DEAD:
                break           # its worker stopped it
            if not server_alive and info.state in (lib.UBLK_S_DEV_QUIESCED, lib.UBLK_S_DEV_FAIL_IO):
                ctrl.stop(dev_id)
                log.error("device %d stopped: the I/O it held failed", dev_id)
                break
            if server_alive and time.monotonic() > deadline:
                log.error("device %d: its worker %d did not stop it: killing it", dev_id, info.ublksrv_pid)
                os.kill(info.ublksrv_pid, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(POLL_SECONDS)
    record.state, record.worker_pid = State.LOST, 0
    records.save(record)
