"""`upgrade`: a live device handed to the trueno-ublk installed now, in
place -- its daemon execs the new code (SIGHUP) and takes the device over
from itself, every page kept."""
import os
import signal
import time

from trueno_ublk.base.errors import UserError
from trueno_ublk.devices import records
from trueno_ublk.devices.records import State

UPGRADE_WAIT_SECONDS = 120.0


def upgrade(dev_id: int) -> records.DeviceRecord:
    """Ask the daemon of a live device to upgrade, and wait until the new
    code serves it: its record then, or UserError."""
    record = records.load(dev_id)
    if record.state is not State.LIVE:
        raise UserError(f"/dev/ublkb{dev_id} is {record.state}: upgrade it once it is live")
    if "USER_RECOVERY" not in record.features:
        raise UserError(f"/dev/ublkb{dev_id} was made without user recovery: it cannot be handed over")
    os.kill(record.pid, signal.SIGHUP)
    deadline = time.monotonic() + UPGRADE_WAIT_SECONDS
    while True:
        time.sleep(0.1)
        now = records.load(dev_id)
        if now is None or not record.daemon_alive():
            raise UserError(f"the daemon of /dev/ublkb{dev_id} ended during the upgrade: "
                            f"see {records.log_path(dev_id)} or its service's journal")
        if now.takeovers > record.takeovers and now.state is State.LIVE:
            return now
        if time.monotonic() > deadline:
            raise UserError(f"/dev/ublkb{dev_id} is still {now.state} after {UPGRADE_WAIT_SECONDS:.0f}s: "
                            f"see {records.log_path(dev_id)} or its service's journal")
