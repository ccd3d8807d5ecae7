"""The ublk devices the kernel has, ours or not, and what one whose daemon
is gone does with its I/O."""
import os

from trueno_ublk.base.errors import UserError
from trueno_ublk.devices.records import State

# What a device whose daemon is gone does with its I/O, by its state in
# the kernel (GET_DEV_INFO) or, once its guard ended it, its record's;
# `list` shows the state and says this.
ORPHAN_STATES = {
    State.HELD: "its daemon is gone: I/O waits for a new one (systemd restarts it, if it runs the "
                "device; `trueno-ublk delete {id}` fails the I/O and frees it)",
    State.FAILING: "its daemon is gone, and every page with it: I/O to it fails "
                   "(`trueno-ublk delete {id}` frees it)",
    State.LOST: "its daemon died, and every page with it: the I/O it held failed, and so does any "
                "new I/O (`trueno-ublk delete {id}` frees it; swapoff or umount it first)",
}


def kernel_devices() -> set[int]:
    """Every ublk device the kernel has, managed by us or not."""
    try:
        names = os.listdir("/sys/class/ublk-char")
    except FileNotFoundError:
        return set()
    return {int(n[5:]) for n in names if n.startswith("ublkc") and n[5:].isdigit()}


def kernel_states() -> dict[int, int]:
    """Each ublk device's state in the kernel; empty for a caller who may
    not ask (the control device is root's)."""
    from trueno_ublk.base.control import Control, ControlError
    states = {}
    try:
        with Control() as ctrl:
            for dev_id in kernel_devices():
                try:
                    states[dev_id] = ctrl.info(dev_id).state
                except ControlError:
                    continue
    except UserError:
        pass
    return states


def orphan_state(kernel_state: int | None) -> State:
    from trueno_ublk._native import lib
    return {lib.UBLK_S_DEV_QUIESCED: State.HELD, lib.UBLK_S_DEV_FAIL_IO: State.FAILING}.get(kernel_state, State.DEAD)
