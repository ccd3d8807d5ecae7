"""A device a previous daemon left, to be served on: under systemd, the
arena systemd kept for this service (a restart, or a daemon that died);
after `upgrade`, the one the old code passed to the new (supervisor.py)."""
import dataclasses
import os

from trueno_ublk.devices.kernel import kernel_devices
from trueno_ublk.systemd import service


@dataclasses.dataclass
class Takeover:
    """A device a previous supervisor left, to be served on: its arena
    (None for a store that keeps none) and how many takeovers came before."""
    arena_fd: int | None
    takeovers: int = 0
    guard_pid: int = 0      # the guard the previous code started (guard.py), adopted by an upgrade


def arena_name(dev_id: int) -> str:
    """The name the arena is kept under in systemd's descriptor store."""
    return f"arena-{dev_id}"


def kept_device(dev_id: int, stale, warn) -> Takeover | None:
    """Under systemd: the device a previous daemon of this service left,
    if systemd kept its arena (the supervisor takes it over, pages and
    all); `stale` is its record, if one is left. `warn(line)` tells why
    kept pages are dropped."""
    stored = service.take_stored_fds()
    arena_fd = stored.pop(arena_name(dev_id), None) if dev_id >= 0 else None
    for name, fd in stored.items():             # not ours: let systemd forget them
        os.close(fd)
        service.drop_stored_fd(name)
    if arena_fd is None:
        return None
    if dev_id not in kernel_devices():          # deleted meanwhile: its pages are nobody's
        warn(f"/dev/ublkb{dev_id} is gone: its kept pages are dropped")
        os.close(arena_fd)
        service.drop_stored_fd(arena_name(dev_id))
        return None
    return Takeover(arena_fd, stale.takeovers if stale is not None else 0)
