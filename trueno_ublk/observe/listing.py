"""`list` in zramctl's style: named columns, human or raw sizes, JSON."""
from trueno_ublk.base import stats
from trueno_ublk.base.errors import UserError
from trueno_ublk.base.units import PAGE_SIZE, format_size
from trueno_ublk.devices import admin, records
from trueno_ublk.devices.kernel import kernel_devices, kernel_states, orphan_state
from trueno_ublk.devices.records import State

# zramctl's, and STATE: a device whose daemon died says so (and `list` what to do).
DEFAULT_COLUMNS = ["NAME", "ALGORITHM", "DISKSIZE", "DATA", "COMPR", "TOTAL", "STREAMS", "MOUNTPOINT", "STATE"]
# column -> (JSON key, is a byte size): the record's, then the statistics'
# (stats.STATS: a column of a page count shows their bytes), then the rest.
COLUMNS = {
    "NAME": ("name", False),
    "ALGORITHM": ("algorithm", False),
    "DISKSIZE": ("disksize", True),
    **{s.column: (s.column.lower(), s.unit in ("bytes", "pages") and not s.column.endswith("-PAGES"))
       for s in stats.STATS if s.column},
    "COMP-RATIO": ("comp-ratio", False),
    "STREAMS": ("streams", False),
    "MOUNTPOINT": ("mountpoint", False),
    "QUEUES": ("queues", False),
    "STATE": ("state", False),
    "PID": ("pid", False),
    "WORKER": ("worker", False),
    "RECOVERIES": ("recoveries", False),
    "FEATURES": ("features", False),
}
STAT_COLUMNS = [s for s in stats.STATS if s.column]


def parse_columns(text: str) -> list[str]:
    names = [c.strip().upper() for c in text.split(",") if c.strip()]
    unknown = [c for c in names if c not in COLUMNS]
    if unknown or not names:
        raise UserError(f"unknown column '{unknown[0] if unknown else text}': "
                        f"valid ones are {', '.join(COLUMNS)}")
    return names


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
    states = None
    for dev_id in sorted(set(by_id) | kernel_devices()):
        name = f"/dev/ublkb{dev_id}"
        r = by_id.get(dev_id)
        row = {key: None for key, _ in COLUMNS.values()}
        row.update(name=name, mountpoint=mounts.get(name), state=State.UNMANAGED)
        if r is not None:
            row.update(algorithm=r.algorithm, disksize=r.size, streams=r.queues, queues=r.queues,
                       pid=r.pid, worker=r.worker_pid or None, recoveries=r.recoveries,
                       features=",".join(r.features) or None,
                       state=r.state)
            if not r.daemon_alive() and r.state is not State.LOST:
                states = kernel_states() if states is None else states
                row["state"] = orphan_state(states.get(dev_id))
            reply = admin.live_stat(r)
            figures = stats.figures(reply) if reply else {}
            if figures:
                for s in STAT_COLUMNS:
                    key, is_size = COLUMNS[s.column]
                    value = figures.get(s.key)
                    row[key] = value * PAGE_SIZE if value is not None and is_size and s.unit == "pages" else value
                row["comp-ratio"] = stats.comp_ratio(figures)
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
