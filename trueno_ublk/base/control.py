"""The ublk control device (/dev/ublk-control): add, configure, start, stop
and delete devices. Wire structs come from native/ublk/ublk_abi.h via cffi."""
import errno
import os
import threading
import time

from trueno_ublk._native import ffi, lib
from trueno_ublk.base.errors import UserError

CONTROL_PATH = "/dev/ublk-control"
NO_QUEUE = 0xFFFF
ANY_DEV_ID = 0xFFFFFFFF
MAX_DISCARD_BYTES = 1 << 30

FEATURE_NAMES = {
    lib.UBLK_F_SUPPORT_ZERO_COPY: "ZERO_COPY",
    lib.UBLK_F_URING_CMD_COMP_IN_TASK: "URING_CMD_COMP_IN_TASK",
    lib.UBLK_F_NEED_GET_DATA: "NEED_GET_DATA",
    lib.UBLK_F_USER_RECOVERY: "USER_RECOVERY",
    lib.UBLK_F_USER_RECOVERY_REISSUE: "USER_RECOVERY_REISSUE",
    lib.UBLK_F_UNPRIVILEGED_DEV: "UNPRIVILEGED_DEV",
    lib.UBLK_F_CMD_IOCTL_ENCODE: "CMD_IOCTL_ENCODE",
    lib.UBLK_F_USER_COPY: "USER_COPY",
    lib.UBLK_F_ZONED: "ZONED",
    lib.UBLK_F_USER_RECOVERY_FAIL_IO: "USER_RECOVERY_FAIL_IO",
    lib.UBLK_F_UPDATE_SIZE: "UPDATE_SIZE",
    lib.UBLK_F_AUTO_BUF_REG: "AUTO_BUF_REG",
    lib.UBLK_F_QUIESCE: "QUIESCE",
    lib.UBLK_F_PER_IO_DAEMON: "PER_IO_DAEMON",
    lib.UBLK_F_BUF_REG_OFF_DAEMON: "BUF_REG_OFF_DAEMON",
    lib.UBLK_F_BATCH_IO: "BATCH_IO",
    lib.UBLK_F_INTEGRITY: "INTEGRITY",
    lib.UBLK_F_SAFE_STOP_DEV: "SAFE_STOP_DEV",
    lib.UBLK_F_NO_AUTO_PART_SCAN: "NO_AUTO_PART_SCAN",
}

# command name -> (ioctl-encoded opcode, legacy opcode)
_COMMANDS = {
    name: (getattr(lib, "UBLK_U_CMD_" + name), getattr(lib, "UBLK_CMD_" + name))
    for name in ("GET_DEV_INFO", "ADD_DEV", "DEL_DEV", "START_DEV", "STOP_DEV",
                 "SET_PARAMS", "GET_PARAMS", "GET_FEATURES",
                 "START_USER_RECOVERY", "END_USER_RECOVERY", "DEL_DEV_ASYNC", "UPDATE_SIZE",
                 "QUIESCE_DEV", "TRY_STOP_DEV")
}


def feature_names(flags: int) -> list[str]:
    return [name for bit, name in FEATURE_NAMES.items() if flags & bit]


def require_control_device() -> None:
    """Fail with a one-line hint when the kernel cannot serve ublk at all."""
    if not os.path.exists(CONTROL_PATH):
        raise UserError(
            f"{CONTROL_PATH} is missing: the kernel needs the ublk driver "
            "(CONFIG_BLK_DEV_UBLK); load it with 'sudo modprobe ublk_drv'")


DELETE_SETTLE_SECONDS = 5.0


class ControlError(OSError):
    """A control command the kernel refused."""


class Control:
    """One io_uring on /dev/ublk-control. Thread-safe: one command at a time."""

    def __init__(self):
        require_control_device()
        err = ffi.new("int *")
        self._ctrl = lib.ctrl_ring_open(err)
        if self._ctrl == ffi.NULL:
            code = -err[0]
            if code in (errno.EACCES, errno.EPERM):
                raise UserError(f"cannot open {CONTROL_PATH}: permission denied (run as root)")
            raise UserError(f"cannot open {CONTROL_PATH}: {os.strerror(code)}")
        self._lock = threading.Lock()
        self.features = self._get_features()
        # Kernels that know the ioctl encoding take it for every command.
        self.ioctl_encode = bool(self.features & lib.UBLK_F_CMD_IOCTL_ENCODE)

    def close(self) -> None:
        if self._ctrl is not None:
            lib.ctrl_ring_close(self._ctrl)
            self._ctrl = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _issue(self, name, dev_id, addr=ffi.NULL, length=0, data=0, encoded=None):
        encoded_op, legacy_op = _COMMANDS[name]
        use_encoded = self.ioctl_encode if encoded is None else encoded
        with self._lock:
            res = lib.ctrl_ring_cmd(self._ctrl, encoded_op if use_encoded else legacy_op,
                                    dev_id, NO_QUEUE, addr, length, data)
        if res < 0:
            raise ControlError(-res, f"{name}: {os.strerror(-res)}")
        return res

    def _get_features(self) -> int:
        out = ffi.new("uint64_t *")
        # Before 6.5 there is no GET_FEATURES: such kernels get legacy opcodes.
        for encoded in (True, False):
            try:
                self._issue("GET_FEATURES", 0, out, 8, encoded=encoded)
                return out[0]
            except ControlError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOTTY):
                    raise
        return 0

    def add_device(self, dev_id: int, queues: int, depth: int, max_io_bytes: int,
                   flags: int):
        """ADD_DEV; returns the kernel's dev_info (dev_id filled in)."""
        info = ffi.new("struct ublksrv_ctrl_dev_info *")
        info.nr_hw_queues = queues
        info.queue_depth = depth
        info.max_io_buf_bytes = max_io_bytes
        info.dev_id = ANY_DEV_ID if dev_id < 0 else dev_id
        info.ublksrv_pid = os.getpid()
        info.flags = flags
        self._issue("ADD_DEV", info.dev_id, info, ffi.sizeof(info[0]))
        return info

    def set_params(self, dev_id: int, size: int, max_io_bytes: int) -> None:
        """Block geometry: 512-byte logical sectors, 4 KiB physical pages, and
        discard + write-zeroes, which swap needs to give memory back."""
        p = ffi.new("struct ublk_params *")
        p.len = ffi.offsetof("struct ublk_params", "discard") + ffi.sizeof("struct ublk_param_discard")
        p.types = lib.UBLK_PARAM_TYPE_BASIC | lib.UBLK_PARAM_TYPE_DISCARD
        p.basic.logical_bs_shift = 9
        p.basic.physical_bs_shift = 12
        p.basic.io_opt_shift = 12
        p.basic.io_min_shift = 12
        p.basic.max_sectors = max_io_bytes >> 9
        p.basic.dev_sectors = size >> 9
        p.discard.discard_granularity = 4096
        p.discard.max_discard_sectors = MAX_DISCARD_BYTES >> 9
        p.discard.max_write_zeroes_sectors = MAX_DISCARD_BYTES >> 9
        p.discard.max_discard_segments = 1
        self._issue("SET_PARAMS", dev_id, p, p.len)

    def size(self, dev_id: int) -> int:
        """The device's size in bytes, as the kernel has it now."""
        p = ffi.new("struct ublk_params *")
        p.len = ffi.sizeof(p[0])
        p.types = lib.UBLK_PARAM_TYPE_BASIC
        self._issue("GET_PARAMS", dev_id, p, p.len)
        return p.basic.dev_sectors << 9

    def update_size(self, dev_id: int, size: int) -> None:
        """Change a live device's size (UPDATE_SIZE, 6.16): the disk's
        capacity changes at once, and its openers are told."""
        self._issue("UPDATE_SIZE", dev_id, data=size >> 9)

    def start(self, dev_id: int, daemon_pid: int) -> None:
        self._issue("START_DEV", dev_id, data=daemon_pid)

    def start_recovery(self, dev_id: int) -> None:
        """Once the kernel has quiesced a device whose server died: a new
        server may now open /dev/ublkcN and FETCH."""
        self._issue("START_USER_RECOVERY", dev_id)

    def end_recovery(self, dev_id: int, daemon_pid: int) -> None:
        """Waits for every queue's FETCHes, like START_DEV, then the device
        is LIVE again and the requests held meanwhile are reissued."""
        self._issue("END_USER_RECOVERY", dev_id, data=daemon_pid)

    def quiesce(self, dev_id: int, timeout_ms: int) -> None:
        """Park a live device for its next server (QUIESCE, 6.16): new
        requests are held, the server's idle FETCHes end with an abort, and
        once it has closed /dev/ublkcN the device is QUIESCED, ready for
        user recovery. EBUSY if the queues did not idle within timeout_ms."""
        self._issue("QUIESCE_DEV", dev_id, data=timeout_ms)

    def stop(self, dev_id: int) -> None:
        self._issue("STOP_DEV", dev_id)

    def try_stop(self, dev_id: int) -> None:
        """Stop the device unless it is open (SAFE_STOP_DEV): EBUSY if it is."""
        self._issue("TRY_STOP_DEV", dev_id)

    def delete(self, dev_id: int) -> None:
        """Delete the device. DEL_DEV waits until its last opener closes it,
        however long that takes (a process holding a device stopped by
        `delete --force`); DEL_DEV_ASYNC (6.9) does not, so it is used where
        the kernel has it, and the device's id is awaited for a few seconds
        only, as long as the kernel takes to free it when nobody holds it."""
        try:
            self._issue("DEL_DEV_ASYNC", dev_id)
        except ControlError as e:
            if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTTY):
                raise
            self._issue("DEL_DEV", dev_id)
            return
        deadline = time.monotonic() + DELETE_SETTLE_SECONDS
        while self.exists(dev_id) and time.monotonic() < deadline:
            time.sleep(0.05)

    def exists(self, dev_id: int) -> bool:
        """Whether the kernel still has device dev_id."""
        try:
            self.info(dev_id)
        except ControlError as e:
            if e.errno == errno.ENODEV:
                return False
            raise
        return True

    def info(self, dev_id: int):
        info = ffi.new("struct ublksrv_ctrl_dev_info *")
        self._issue("GET_DEV_INFO", dev_id, info, ffi.sizeof(info[0]))
        return info

    def opcode(self, encoded: int, legacy: int) -> int:
        return encoded if self.ioctl_encode else legacy
