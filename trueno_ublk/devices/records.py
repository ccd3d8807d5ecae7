"""What every running daemon leaves under /run/trueno-ublk/, so that `list`
and `delete` can find it: one JSON record and one log per device."""
import dataclasses
import json
import os
from pathlib import Path

from trueno_ublk.base import procfs

RUN_DIR = Path(os.environ.get("TRUENO_UBLK_RUN_DIR", "/run/trueno-ublk"))


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
    state: str = "starting"     # supervisor.State
    worker_pid: int = 0         # the I/O worker serving the device now
    recoveries: int = 0         # workers replaced after dying
    takeovers: int = 0          # supervisors that took the device over (upgrade, restart)

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
