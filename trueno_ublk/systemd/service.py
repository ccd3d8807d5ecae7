"""How a daemon meets its service manager: sd_notify(3) and systemd's
file descriptor store."""
import array
import logging
import os
import socket
import subprocess

log = logging.getLogger(__name__)


SYSTEMCTL_SECONDS = 10.0
LISTEN_FDS_START = 3            # sd_listen_fds(3): passed descriptors start here


def notify_systemd(message: str, fds: tuple[int, ...] = ()) -> bool:
    """sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET,
    carrying `fds` (SCM_RIGHTS) if given. Whether it was sent."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            # (socket.send_fds would drop the address: sendmsg takes it.)
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
            s.sendmsg([message.encode()], rights, 0, path)
    except OSError as e:
        log.warning("cannot notify systemd: %s", e)
        return False
    return True


def own_unit() -> str:
    """The systemd service this process runs in ("" if none), from its cgroup."""
    try:
        with open("/proc/self/cgroup") as f:
            paths = [line.rstrip("\n").split(":", 2)[2] for line in f]
    except (OSError, IndexError):
        return ""
    for path in paths:
        for part in reversed(path.split("/")):
            if part.endswith(".service"):
                return part
    return ""


def _systemctl(*args: str) -> str:
    try:
        return subprocess.run(["systemctl", *args], capture_output=True, text=True, check=True,
                              timeout=SYSTEMCTL_SECONDS).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def fd_store_size() -> int:
    """How many descriptors systemd keeps for this service across its
    restarts (FileDescriptorStoreMax=); 0 when not run by systemd."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return 0
    announced = os.environ.get("FDSTORE")           # systemd 254 and newer say it
    if announced is None:
        unit = own_unit()
        announced = _systemctl("show", "--property=FileDescriptorStoreMax", "--value", unit) if unit else ""
    try:
        return int(announced.strip() or 0)
    except ValueError:
        return 0


def store_fd(fd: int, name: str) -> bool:
    """Give systemd a copy of `fd` to keep under `name` while the service
    lives and across its restarts (FDSTORE=1)."""
    return notify_systemd(f"FDSTORE=1\nFDNAME={name}", (fd,))


def drop_stored_fd(name: str) -> None:
    notify_systemd(f"FDSTOREREMOVE=1\nFDNAME={name}")


def take_stored_fds() -> dict[str, int]:
    """The descriptors systemd passed us at start (sd_listen_fds(3)), by
    name, made close-on-exec; the variables that described them are cleared
    so that no child takes them for its own."""
    env = os.environ
    try:
        mine = int(env.get("LISTEN_PID", "")) == os.getpid()
        count = int(env.get("LISTEN_FDS", "0")) if mine else 0
    except ValueError:
        count = 0
    names = env.get("LISTEN_FDNAMES", "").split(":")
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(var, None)
    found = {}
    for i in range(count):
        fd = LISTEN_FDS_START + i
        try:
            os.set_inheritable(fd, False)
        except OSError:
            continue
        found[names[i] if i < len(names) else f"fd{i}"] = fd
    return found


def restart_queued() -> bool:
    """Whether the stop we are in is half of a restart (`systemctl restart`):
    then the service comes back at once and its successor takes over."""
    unit = own_unit()
    if not unit:
        return False
    for line in _systemctl("list-jobs", "--no-legend", "--no-pager", unit).splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1] == unit and fields[2] in ("restart", "try-restart"):
            return True
    return False
