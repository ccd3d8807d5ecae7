"""Deleting a device: refused while it is in use (unless forced), its
daemon stopped, then the device removed from the kernel and its record
from /run/trueno-ublk/. `delete` does it, and `create` for a device whose
daemon died."""
import errno
import os
import signal
import time

from trueno_ublk.base.control import Control, ControlError
from trueno_ublk.base.errors import UserError
from trueno_ublk.devices import records
from trueno_ublk.devices.kernel import kernel_devices

DELETE_WAIT_SECONDS = 30.0


def delete_device(dev_id: int, force: bool) -> None:
    record = records.load(dev_id)
    if record is None and dev_id not in kernel_devices():
        raise UserError(f"no such device: /dev/ublkb{dev_id}")
    if not force and _device_in_use(dev_id):
        raise UserError(f"/dev/ublkb{dev_id} is in use (mounted, active swap or held open): "
                        "unmount or swapoff it first, or pass --force")
    if not force and record is not None and "SAFE_STOP_DEV" in record.features:
        _safe_stop(dev_id)
    if record is not None and record.daemon_alive():
        # SIGINT: stop now. SIGTERM is also systemd's stop, which swaps
        # off first, and --force means the device goes under its users.
        os.kill(record.pid, signal.SIGINT)
        if not _wait_for_exit(record, DELETE_WAIT_SECONDS):
            raise UserError(f"the daemon of /dev/ublkb{dev_id} (pid {record.pid}) did not stop "
                            f"within {DELETE_WAIT_SECONDS:.0f}s")
    try:
        _remove_from_kernel(dev_id)
    except ControlError as e:
        raise UserError(f"cannot delete /dev/ublkb{dev_id}: {e.strerror}") from None
    records.remove(dev_id)


def _device_in_use(dev_id: int) -> bool:
    """Mounted, active swap and other exclusive holders all make an O_EXCL
    open of the block device fail with EBUSY."""
    try:
        fd = os.open(f"/dev/ublkb{dev_id}", os.O_RDONLY | os.O_EXCL)
    except OSError as e:
        return e.errno == errno.EBUSY
    os.close(fd)
    return False


def _holders(dev_id: int) -> str:
    """The processes that have /dev/ublkbN open, as "pid 12 (fio), ..."."""
    path, found = f"/dev/ublkb{dev_id}", []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == path for fd in os.listdir(f"/proc/{pid}/fd")):
                with open(f"/proc/{pid}/comm") as f:
                    found.append(f"pid {pid} ({f.read().strip()})")
        except OSError:
            continue                    # gone, or not ours to look at
    return ", ".join(found) or "a process"


def _safe_stop(dev_id: int) -> None:
    """Stop the device in the kernel only if nothing has it open (7.0+): no
    window between a check and the stop for an opener to slip through."""
    with Control() as ctrl:
        try:
            ctrl.try_stop(dev_id)
        except ControlError as e:
            if e.errno == errno.EBUSY:
                raise UserError(f"/dev/ublkb{dev_id} is open by {_holders(dev_id)}: "
                                "close it first, or pass --force") from None
            if e.errno != errno.ENODEV:         # ENODEV: stopped already (its daemon died)
                raise UserError(f"cannot stop /dev/ublkb{dev_id}: {e.strerror}") from None


def _wait_for_exit(record, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while record.daemon_alive():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _remove_from_kernel(dev_id: int) -> None:
    """STOP_DEV + DEL_DEV for a device no live daemon owns."""
    with Control() as ctrl:
        if not ctrl.exists(dev_id):
            return
        try:
            ctrl.stop(dev_id)
        except ControlError:
            pass                # already stopped: deleting is what matters
        ctrl.delete(dev_id)
