"""What the benchmarks share: running commands and fio, a kernel zram
device to compare with, a trueno-ublk device through the real CLI."""
import json
import subprocess
import sys
from pathlib import Path

CLI = str(Path(sys.executable).with_name("trueno-ublk"))
TOP = Path(__file__).resolve().parent.parent
MiB = 1 << 20
# fio's data for every comparison: half of each buffer compressible.
HALF_COMPRESSIBLE = "--buffer_compress_percentage=50 --refill_buffers"


def sh(cmd: str) -> str:
    """Run `cmd` in /tmp (fio leaves state files in its working directory)."""
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True,
                          cwd="/tmp").stdout


def fio(dev: str, options: str) -> dict:
    """One fio job on `dev` (direct I/O through io_uring): its JSON report."""
    out = sh(f"fio --name=b --filename={dev} --ioengine=io_uring --direct=1 {options} "
             "--output-format=json")
    return json.loads(out)["jobs"][0]


class Zram:
    """A kernel zram device of `size`, made through zram-control, removed by close()."""

    def __init__(self, size: str, algorithm: str = "lz4"):
        sh("modprobe zram num_devices=0")
        self.id = int(Path("/sys/class/zram-control/hot_add").read_text())
        self.sysfs = Path(f"/sys/block/zram{self.id}")
        (self.sysfs / "comp_algorithm").write_text(algorithm)
        (self.sysfs / "disksize").write_text(size)
        self.path = f"/dev/zram{self.id}"

    def mm_stat(self) -> list[int]:
        return [int(x) for x in (self.sysfs / "mm_stat").read_text().split()]

    def close(self) -> None:
        (self.sysfs / "reset").write_text("1")
        Path("/sys/class/zram-control/hot_remove").write_text(str(self.id))


class Trueno:
    """A trueno-ublk device made with `create --size SIZE OPTIONS`, deleted by close()."""

    def __init__(self, size: str, options: str = ""):
        self.path = sh(f"{CLI} create --size {size} {options}").strip()

    def stat(self) -> dict:
        return json.loads(sh(f"{CLI} stat --json {self.path}"))

    def worker_pid(self) -> int:
        devices = json.loads(sh(f"{CLI} list --json -o NAME,WORKER"))["devices"]
        return next(d["worker"] for d in devices if d["name"] == self.path)

    def close(self) -> None:
        sh(f"{CLI} delete {self.path}")
