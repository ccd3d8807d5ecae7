"""The devices a store puts pages on outside its own RAM, opened here and
used by the C side: the backing device it writes cold and incompressible
pages to, as zram's backing_dev, and the kernel zram
device of the zram tier.

A block device (a partition, an LV, a namespace) is opened O_DIRECT and
O_EXCL, so that no filesystem or second device can hold it meanwhile. A
regular file is a trap for swap: a write that makes the filesystem
allocate (a hole, an unwritten extent from fallocate, a copy-on-write or
compressed extent) needs memory and the journal while reclaim is waiting
for that very write. So a file is taken only where every write lands in
place: each byte of it already written, on a filesystem that overwrites
in place; FIEMAP tells.
"""
import array
import ctypes
import errno
import fcntl
import os
import stat
import struct

from trueno_ublk.base.units import PAGE_SIZE, format_size

FS_IOC_FIEMAP = 0xC020660B
FIEMAP_HEADER = struct.Struct("=QQLLLL")          # start, length, flags, mapped, count, reserved
FIEMAP_EXTENT = struct.Struct("=QQQQQLLLL")       # logical, physical, length, 2 reserved, flags, 3 reserved
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_EXTENT_LAST = 0x1
# Extents a write to would allocate, move or encode: not in place.
FIEMAP_NOT_IN_PLACE = {
    0x2: "its place is not known yet (delayed allocation)",
    0x4: "its place is unknown",
    0x8: "it is encoded (compressed)",
    0x80: "it is encrypted",
    0x100: "it is not aligned",
    0x200: "it is inline in metadata",
    0x400: "it is packed with other data",
    0x800: "it was fallocated and never written (unwritten)",
    0x2000: "it is shared with another file (copy on write)",
}
EXTENTS_AT_ONCE = 64
# Filesystems known to overwrite a written extent in place.
IN_PLACE_FILESYSTEMS = {0xEF53: "ext4", 0x58465342: "xfs"}


class BackingError(ValueError):
    """One line for the user: why this path cannot back a device."""


def open_backing(path: str) -> tuple[int, int]:
    """(fd, size in bytes: whole pages) of `path`, ready for direct I/O;
    BackingError when it cannot be used."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise BackingError(f"backing device {path}: {e.strerror}") from None
    if stat.S_ISREG(st.st_mode):
        _check_file(path, st)
        flags = os.O_RDWR | os.O_DIRECT | os.O_CLOEXEC
    elif stat.S_ISBLK(st.st_mode):
        flags = os.O_RDWR | os.O_DIRECT | os.O_EXCL | os.O_CLOEXEC
    else:
        raise BackingError(f"backing device {path}: not a block device or a regular file")
    return _open_pages(path, flags, "backing device", "smaller than a page")


def open_zram(path: str) -> tuple[int, int, str]:
    """(fd, size in bytes, name) of the kernel zram device `path`, ready
    for direct I/O, held exclusively (no swap or filesystem on it meanwhile);
    BackingError when it cannot be used."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise BackingError(f"zram device {path}: {e.strerror}") from None
    sysfs = f"/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    name = os.path.basename(os.path.realpath(sysfs)) if stat.S_ISBLK(st.st_mode) else ""
    if not name.startswith("zram"):
        raise BackingError(f"zram device {path}: not a kernel zram device (/dev/zramN)")
    fd, size = _open_pages(path, os.O_RDWR | os.O_DIRECT | os.O_EXCL | os.O_CLOEXEC, "zram device",
                           f"no disksize set (zramctl --size SIZE {path})")
    return fd, size, name


def _open_pages(path: str, flags: int, what: str, when_empty: str) -> tuple[int, int]:
    """(fd, size in whole pages) of `path` opened with `flags`; BackingError
    saying why not, `what` naming it, `when_empty` if it holds no page."""
    try:
        fd = os.open(path, flags)
    except OSError as e:
        why = "in use (mounted, swap, or held by another device)" if e.errno == errno.EBUSY else e.strerror
        raise BackingError(f"{what} {path}: {why}") from None
    size = os.lseek(fd, 0, os.SEEK_END) // PAGE_SIZE * PAGE_SIZE
    if size == 0:
        os.close(fd)
        raise BackingError(f"{what} {path}: {when_empty}")
    return fd, size


def _check_file(path: str, st: os.stat_result) -> None:
    if _fs_magic(path) not in IN_PLACE_FILESYSTEMS:
        raise BackingError(f"backing file {path}: its filesystem may allocate on overwrite "
                           f"(ext4 and xfs do not); use a block device or a loop device over it")
    covered = 0
    for logical, length, flags in _extents(path):
        if logical != covered:
            break
        bad = [why for bit, why in FIEMAP_NOT_IN_PLACE.items() if flags & bit]
        if bad:
            raise BackingError(f"backing file {path}: a write could allocate: {bad[0]}; {_write_it(path, st)}")
        covered = logical + length
    if covered < st.st_size // PAGE_SIZE * PAGE_SIZE:
        raise BackingError(f"backing file {path}: it has holes ({format_size(st.st_size - covered)} "
                           f"unwritten); {_write_it(path, st)}")


def _write_it(path: str, st: os.stat_result) -> str:
    return (f"write it whole first (dd if=/dev/zero of={path} bs=1M count={-(-st.st_size // (1 << 20))} "
            "conv=fsync)")


def _fs_magic(path: str) -> int:
    """f_type of statfs(2), which os.statvfs leaves out (the first field:
    a long on Linux's 64-bit ABIs)."""
    buf = ctypes.create_string_buffer(256)
    if ctypes.CDLL(None).statfs(path.encode(), buf) != 0:      # libc, already loaded
        return 0
    return struct.unpack_from("=q", buf.raw)[0] & 0xFFFFFFFF


def _extents(path: str):
    """(logical, length, flags) of each extent of `path`, in order."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        start = 0
        while True:
            buf = array.array("B", FIEMAP_HEADER.pack(start, 2**64 - 1 - start, FIEMAP_FLAG_SYNC, 0,
                                                      EXTENTS_AT_ONCE, 0)
                              + bytes(EXTENTS_AT_ONCE * FIEMAP_EXTENT.size))
            fcntl.ioctl(fd, FS_IOC_FIEMAP, buf)
            mapped = FIEMAP_HEADER.unpack_from(buf)[3]
            if mapped == 0:
                return
            for i in range(mapped):
                logical, _, length, _, _, flags, *_ = FIEMAP_EXTENT.unpack_from(
                    buf, FIEMAP_HEADER.size + i * FIEMAP_EXTENT.size)
                yield logical, length, flags
                if flags & FIEMAP_EXTENT_LAST:
                    return
                start = logical + length
    finally:
        os.close(fd)
