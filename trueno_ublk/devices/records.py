"""What every running daemon leaves under /run/trueno-ublk/, so that `list`
and `delete` can find it: one JSON record and one log per device, and the
states a device can be in."""
import dataclasses
import enum
import json
import os
from pathlib import Path

from trueno_ublk.base import procfs
from trueno_ublk.stores import store_name

RUN_DIR = Path(os.environ.get("TRUENO_UBLK_RUN_DIR", "/run/trueno-ublk"))


class State(enum.StrEnum):
    """A device's state as `list` and `top` show it. A supervisor moves its
    record through the first six (daemon/supervisor.py draws the machine);
    the rest are what a device is found in without a live supervisor
    (LOST is recorded by the supervisor's guard, daemon/guard.py)."""
    STARTING = "starting"
    TAKING_OVER = "taking-over"
    LIVE = "live"
    RECOVERING = "recovering"
    HANDING_OVER = "handing-over"
    STOPPING = "stopping"
    HELD = "held"               # its daemon is gone, the kernel holds its I/O for the next
    FAILING = "failing"         # its daemon is gone, the kernel fails its I/O
    LOST = "lost"               # its daemon died, and the pages with it: its guard ended its I/O
    DEAD = "dead"               # its daemon is gone, and the device with it
    UNMANAGED = "unmanaged"     # a ublk device no trueno-ublk daemon made


@dataclasses.dataclass
class DeviceRecord:
    dev_id: int
    pid: int                    # the daemon (supervisor)
    pid_start: int              # the daemon's start (procfs.process_start): guards against pid reuse
    size: int
    store: str
    algorithm: str
    queues: int
    depth: int
    features: list[str]
    max_io_bytes: int = 0
    queue_threads: int = 1      # threads serving each queue (PER_IO_DAEMON)
    state: State = State.STARTING
    worker_pid: int = 0         # the I/O worker serving the device now
    recoveries: int = 0         # workers replaced after dying
    takeovers: int = 0          # supervisors that took the device over (upgrade, restart)

    def __post_init__(self):
        self.state = State(self.state)      # as read back from JSON
        self.store = store_name(self.store)     # as an older daemon may have spelled it

    @property
    def block_path(self) -> str:
        return f"/dev/ublkb{self.dev_id}"

    def daemon_alive(self) -> bool:
        return procfs.process_start(self.pid) == self.pid_start


def record_path(dev_id: int) -> Path:
    return RUN_DIR / f"{dev_id}.json"


def log_path(dev_id: int) -> Path:
    return RUN_DIR / f"{dev_id}.log"


def socket_path(dev_id: int) -> Path:
    return RUN_DIR / f"{dev_id}.sock"


def save(record: DeviceRecord) -> None:
    RUN_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    path = record_path(record.dev_id)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(record)))
    os.replace(tmp, path)       # readers never see half a record


def remove(dev_id: int) -> None:
    for path in (record_path(dev_id), log_path(dev_id), socket_path(dev_id)):
        path.unlink(missing_ok=True)


def load(dev_id: int) -> DeviceRecord | None:
    try:
        return DeviceRecord(**json.loads(record_path(dev_id).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def load_all() -> list[DeviceRecord]:
    if not RUN_DIR.is_dir():
        return []
    ids = sorted(int(p.stem) for p in RUN_DIR.glob("*.json") if p.stem.isdigit())
    return [r for r in map(load, ids) if r is not None]
