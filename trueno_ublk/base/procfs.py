"""Process and memory facts read straight from /proc.

A few lines of parsing here spare every CLI call and every daemon the
import of a process library: in the test guest, where each import goes
over an emulated 9p share, that import alone cost more than a second.
"""
import os
import re

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(path: str) -> list[str] | None:
    """The fields of a /proc/.../stat line after the command name (which
    may hold spaces and parentheses): [state, ppid, ...]."""
    try:
        with open(path, "rb") as f:
            line = f.read().decode()
    except OSError:
        return None
    return line[line.rindex(")") + 2:].split()


def process_start(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot), or None if no such
    process runs: gone, or a zombie nobody reaped. With the pid it names
    one process for good, whatever later reuses the number."""
    fields = _stat_fields(f"/proc/{pid}/stat")
    if fields is None or fields[0] == "Z":
        return None
    return int(fields[19])


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """User plus system CPU time of each thread of `pid`, by thread id."""
    seconds = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return seconds
    for tid in tids:
        fields = _stat_fields(f"/proc/{pid}/task/{tid}/stat")
        if fields is not None:
            seconds[int(tid)] = (int(fields[11]) + int(fields[12])) / _TICKS
    return seconds


def total_ram_bytes() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def users_of(node: str, swaps_path: str = "/proc/swaps", mounts_path: str = "/proc/self/mounts") -> list[list[str]]:
    """The commands that let go of block device `node`: swapoff where it is
    active swap, umount for each place it is mounted (the last first)."""
    with open(swaps_path) as f:
        commands = [["swapoff", node] for line in f.readlines()[1:] if line.split()[0] == node]
    with open(mounts_path) as f:
        mounts = [_unescaped(line.split()[1]) for line in f if line.split()[0] == node]
    return commands + [["umount", mount] for mount in reversed(mounts)]


def _unescaped(field: str) -> str:
    """A /proc/*/mounts field: space, tab, newline and backslash are octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)
