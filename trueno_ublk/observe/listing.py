"""`list` in zramctl's style: named columns, human or raw sizes, JSON."""
import os

from trueno_ublk.base.errors import UserError
from trueno_ublk.base.units import PAGE_SIZE, format_size
from trueno_ublk.devices import admin, records
from trueno_ublk.observe import stats

DEFAULT_COLUMNS = ["NAME", "ALGORITHM", "DISKSIZE", "DATA", "COMPR", "TOTAL", "STREAMS", "MOUNTPOINT"]
# column -> (JSON key, is a byte size)
COLUMNS = {
    "NAME": ("name", False),
    "ALGORITHM": ("algorithm", False),
    "DISKSIZE": ("disksize", True),
    "DATA": ("data", True),
    "COMPR": ("compr", True),
    "TOTAL": ("total", True),
    "STREAMS": ("streams", False),
    "MOUNTPOINT": ("mountpoint", False),
    "ZERO-PAGES": ("zero-pages", False),
    "MEM-LIMIT": ("mem-limit", True),
    "MEM-USED": ("mem-used", True),
    "HUGE-PAGES": ("huge-pages", False),
    "RECOMPRESSED": ("recompressed", True),
    "IDLE-PAGES": ("idle-pages", False),
    "BACKING": ("backing", True),
    "COMP-RATIO": ("comp-ratio", False),
    "QUEUES": ("queues", False),
    "STATE": ("state", False),
    "PID": ("pid", False),
    "WORKER": ("worker", False),
    "RECOVERIES": ("recoveries", False),
    "FEATURES": ("features", False),
}


def parse_columns(text: str) -> list[str]:
    names = [c.strip().upper() for c in text.split(",") if c.strip()]
    unknown = [c for c in names if c not in COLUMNS]
    if unknown or not names:
        raise UserError(f"unknown column '{unknown[0] if unknown else text}': "
                        f"valid ones are {', '.join(COLUMNS)}")
    return names


def kernel_devices() -> set[int]:
    """Every ublk device the kernel has, managed by us or not."""
    try:
        names = os.listdir("/sys/class/ublk-char")
    except FileNotFoundError:
        return set()
    return {int(n[5:]) for n in names if n.startswith("ublkc") and n[5:].isdigit()}


# What a device whose daemon is gone does with its I/O, by its state in
# the kernel (GET_DEV_INFO); the STATE column shows the key.
ORPHAN_STATES = {
    "held": "its daemon is gone: I/O waits for a new one (systemd restarts it, if it runs the "
            "device; `trueno-ublk delete {id}` fails the I/O and frees it)",
    "failing": "its daemon is gone, and every page with it: I/O to it fails "
               "(`trueno-ublk delete {id}` frees it)",
}


def _kernel_states() -> dict[int, int]:
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


def orphan_state(kernel_state: int | None) -> str:
    from trueno_ublk._native import lib
    return {lib.UBLK_S_DEV_QUIESCED: "held", lib.UBLK_S_DEV_FAIL_IO: "failing"}.get(kernel_state, "dead")


def _mountpoints() -> dict[str, str]:
    points = {}
    for path, field in (("/proc/swaps", 0), ("/proc/mounts", 1)):
        try:
            with open(path) as f:
                for line in f:
                    parts = line.split()
                    if parts and parts[0].startswith("/dev/ublkb"):
                        points[parts[0]] = "[SWAP]" if field == 0 else parts[1]
        except OSError:
            pass
    return points


def device_rows() -> list[dict]:
    rows = []
    by_id = {r.dev_id: r for r in records.load_all()}
    mounts = _mountpoints()
    kernel_states = None
    for dev_id in sorted(set(by_id) | kernel_devices()):
        name = f"/dev/ublkb{dev_id}"
        r = by_id.get(dev_id)
        row = {key: None for key, _ in COLUMNS.values()}
        row.update(name=name, mountpoint=mounts.get(name), state="unmanaged")
        if r is not None:
            row.update(algorithm=r.algorithm, disksize=r.size, streams=r.queues, queues=r.queues,
                       pid=r.pid, worker=r.worker_pid or None, recoveries=r.recoveries,
                       features=",".join(r.features) or None,
                       state=r.state)
            if not r.daemon_alive():
                kernel_states = _kernel_states() if kernel_states is None else kernel_states
                row["state"] = orphan_state(kernel_states.get(dev_id))
            mm = (admin.live_stat(r) or {}).get("mm_stat")
            if mm:
                row.update(data=mm["orig_data_size"], compr=mm["compr_data_size"],
                           total=mm["mem_used_total"], **{
                               "zero-pages": mm["same_pages"], "mem-limit": mm["mem_limit"],
                               "mem-used": mm["mem_used_max"], "huge-pages": mm["huge_pages"],
                               "recompressed": mm.get("recompressed_bytes"), "idle-pages": mm.get("idle_pages"),
                               "backing": mm.get("bd_count", 0) * PAGE_SIZE,
                               "comp-ratio": stats.comp_ratio(mm)})
        rows.append(row)
    return rows


def render(rows: list[dict], columns: list[str], in_bytes: bool, headings: bool, raw: bool) -> str:
    def cell(row, column):
        key, is_size = COLUMNS[column]
        value = row[key]
        if value is None:
            return "" if raw else "-"
        if is_size and not in_bytes:
            return format_size(value)
        return str(value)

    table = [[cell(row, c) for c in columns] for row in rows]
    if headings:
        table.insert(0, columns)
    if raw:
        return "\n".join(" ".join(line) for line in table)
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))] if table else []
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in table)
