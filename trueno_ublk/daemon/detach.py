"""`create` without --foreground: the supervisor detached into the
background, its start-up failures still reported by `create` itself."""
import os

from trueno_ublk.base.errors import UserError
from trueno_ublk.base.logs import configure_logging
from trueno_ublk.daemon.report import Report
from trueno_ublk.daemon.supervisor import DeviceConfig, Supervisor


def spawn_detached(config: DeviceConfig) -> int:
    """Start a supervisor in the background (double fork, new session);
    return its device id once the device is live, or raise the UserError
    that stopped it."""
    report = Report()
    pid = os.fork()
    if pid == 0:
        report.child_side()
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        _run_detached(config, report)
    os.waitpid(pid, 0)
    outcome = report.read()
    if outcome is None:
        raise UserError("the daemon exited during start-up without saying why")
    kind, detail = outcome
    if kind == "error":
        raise UserError(detail)
    return int(detail)


def _run_detached(config: DeviceConfig, report: Report) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.chdir("/")
    configure_logging()

    def serve() -> int:
        Supervisor(config, on_live=lambda dev_id: report.live(str(dev_id)), log_to_file=True).run()
        return 0
    report.run_as_child("the daemon", serve)
