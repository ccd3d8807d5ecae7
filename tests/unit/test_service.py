"""How the daemon meets systemd (service.py) and what it asks of the kernel
for the time it has no server (supervisor.recovery_flags)."""
import os
import socket

import pytest

from trueno_ublk._native import lib
from trueno_ublk.base.errors import UserError
from trueno_ublk.daemon.supervisor import DeviceConfig, recovery_flags
from trueno_ublk.systemd import service

HOLD = lib.UBLK_F_USER_RECOVERY | lib.UBLK_F_USER_RECOVERY_REISSUE
FAIL = lib.UBLK_F_USER_RECOVERY | lib.UBLK_F_USER_RECOVERY_FAIL_IO
KERNEL_6_12 = HOLD
KERNEL_6_13 = HOLD | lib.UBLK_F_USER_RECOVERY_FAIL_IO
KERNEL_7 = KERNEL_6_13 | lib.UBLK_F_QUIESCE


@pytest.mark.parametrize("kernel, mode, flags", [
    (KERNEL_6_12, "auto", HOLD),        # held on every kernel: a dead worker or an upgrade fails nothing
    (KERNEL_6_13, "auto", HOLD),
    (KERNEL_7, "auto", HOLD | lib.UBLK_F_QUIESCE),
    (KERNEL_7, "hold", HOLD | lib.UBLK_F_QUIESCE),
    (KERNEL_6_13, "fail", FAIL),        # failed only where the user asked
    (KERNEL_7, "fail", FAIL | lib.UBLK_F_QUIESCE),
])
def test_io_without_a_server_is_held_unless_failing_is_asked_for(kernel, mode, flags):
    assert recovery_flags(kernel, DeviceConfig(size=1 << 20, io_without_server=mode)) == flags


def test_no_recovery_asks_for_none_and_fail_needs_6_13():
    assert recovery_flags(KERNEL_7, DeviceConfig(size=1 << 20, recovery=False)) == 0
    with pytest.raises(UserError, match="needs Linux 6.13"):
        recovery_flags(KERNEL_6_12, DeviceConfig(size=1 << 20, io_without_server="fail"))


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    """A stand-in for systemd's notification socket: returns a reader of
    one message and the descriptors it carried."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)

    def receive():
        message, fds, _, _ = socket.recv_fds(sock, 4096, 4)
        return message.decode(), fds
    yield receive
    sock.close()


def test_a_descriptor_goes_to_the_store_by_name_and_leaves_it(notify_socket):
    fd = os.memfd_create("arena")
    os.write(fd, b"pages")
    assert service.store_fd(fd, "arena-3")
    message, fds = notify_socket()
    assert message == "FDSTORE=1\nFDNAME=arena-3" and len(fds) == 1
    assert os.pread(fds[0], 5, 0) == b"pages"           # the same file, not a copy
    service.drop_stored_fd("arena-3")
    assert notify_socket() == ("FDSTOREREMOVE=1\nFDNAME=arena-3", [])
    for f in (fd, *fds):
        os.close(f)


def test_no_notify_socket_no_store(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not service.store_fd(0, "arena-0")
    assert service.fd_store_size() == 0


def test_the_store_size_systemd_announces_or_tells(monkeypatch, notify_socket):
    monkeypatch.setenv("FDSTORE", "4")                  # systemd 254+
    assert service.fd_store_size() == 4
    monkeypatch.delenv("FDSTORE")
    monkeypatch.setattr(service, "own_unit", lambda: "trueno-ublk@ublkb0.service")
    asked = []
    monkeypatch.setattr(service, "_systemctl", lambda *args: asked.append(args) or "1\n")
    assert service.fd_store_size() == 1
    assert asked == [("show", "--property=FileDescriptorStoreMax", "--value", "trueno-ublk@ublkb0.service")]
    monkeypatch.setattr(service, "_systemctl", lambda *args: "")       # systemctl missing or refused
    assert service.fd_store_size() == 0


@pytest.fixture
def fds_3_and_4():
    """Descriptors 3 and 4, where systemd passes stored ones, lent to the
    test: whatever the test runner keeps there is put back afterwards."""
    saved = {fd: os.dup(fd) for fd in (3, 4) if _is_open(fd)}
    yield
    for fd in (3, 4):
        if fd in saved:
            os.dup2(saved.pop(fd), fd)
        elif _is_open(fd):
            os.close(fd)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_stored_descriptors_are_taken_by_name_once(monkeypatch, fds_3_and_4):
    for fd, name in ((3, "a"), (4, "b")):
        made = os.memfd_create(name)
        os.dup2(made, fd, inheritable=True)
        os.close(made)
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "2")
    monkeypatch.setenv("LISTEN_FDNAMES", "arena-0:stray")
    assert service.take_stored_fds() == {"arena-0": 3, "stray": 4}
    assert not os.get_inheritable(3)
    assert os.readlink("/proc/self/fd/3") == "/memfd:a (deleted)"
    assert "LISTEN_FDS" not in os.environ and "LISTEN_PID" not in os.environ
    assert service.take_stored_fds() == {}              # the variables are gone with the first call


def test_descriptors_meant_for_another_process_are_not_taken(monkeypatch):
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert service.take_stored_fds() == {}


def test_own_unit_from_the_cgroup(monkeypatch, tmp_path):
    cgroup = tmp_path / "cgroup"
    cgroup.write_text("0::/system.slice/system-trueno\\x2dublk.slice/trueno-ublk@ublkb0.service\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: real_open(
        cgroup if path == "/proc/self/cgroup" else path, *a, **k))
    assert service.own_unit() == "trueno-ublk@ublkb0.service"
    cgroup.write_text("0::/user.slice/user-0.slice/session-1.scope\n")
    assert service.own_unit() == ""


@pytest.mark.parametrize("jobs, queued", [
    ("17 trueno-ublk@ublkb0.service restart running\n", True),
    ("18 trueno-ublk@ublkb0.service stop running\n", False),
    ("19 trueno-ublk@ublkb1.service restart running\n", False),     # another device's
    ("", False),
])
def test_a_restart_is_told_from_a_stop_by_the_job(monkeypatch, jobs, queued):
    monkeypatch.setattr(service, "own_unit", lambda: "trueno-ublk@ublkb0.service")
    monkeypatch.setattr(service, "_systemctl", lambda *args: jobs)
    assert service.restart_queued() is queued
