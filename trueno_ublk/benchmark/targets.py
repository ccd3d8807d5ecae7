"""What a device benchmark runs against: fio, a kernel zram device to
compare with, and a trueno-ublk device made through the real command.
`trueno-ublk benchmark` and the developers' scripts/bench share them."""
import errno
import json
import subprocess
import sys
import time
from pathlib import Path

from trueno_ublk.base.stats import ZRAM_LINES

MiB = 1 << 20
RESET_TRIES = 100           # a tenth of a second apart
MEMORY = ZRAM_LINES["mm_stat"][:3]       # orig_data_size, compr_data_size, mem_used_total: what memory() gives


def sh(cmd: str) -> str:
    """Run `cmd` in /tmp (fio leaves state files in its working directory)."""
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True,
                          cwd="/tmp").stdout


def failure(e: subprocess.CalledProcessError) -> str:
    """Why a command of sh() failed, in one line: its last line of stderr."""
    lines = (e.stderr or "").strip().splitlines()
    return lines[-1] if lines else f"{e.cmd.split()[0]} exited with status {e.returncode}"


def fio(dev: str, options: str) -> dict:
    """One fio job on `dev` (direct I/O through io_uring): its JSON report."""
    out = sh(f"fio --name=b --filename={dev} --ioengine=io_uring --direct=1 {options} "
             "--output-format=json")
    return json.loads(out)["jobs"][0]


class Zram:
    """A kernel zram device of `size`, made through zram-control, removed by
    close(); with `backing`, that block device as its backing_dev (kernels
    built with CONFIG_ZRAM_WRITEBACK); with `params`, that line written to
    algorithm_params (6.12 on: "dict=PATH", "level=N")."""

    def __init__(self, size: str | int, algorithm: str = "lz4", backing: str | None = None,
                 params: str | None = None):
        sh("modprobe zram num_devices=0")
        self.id = int(Path("/sys/class/zram-control/hot_add").read_text())
        self.sysfs = Path(f"/sys/block/zram{self.id}")
        self.path = f"/dev/zram{self.id}"
        try:
            (self.sysfs / "comp_algorithm").write_text(algorithm)
            if params:
                (self.sysfs / "algorithm_params").write_text(f"algo={algorithm} {params}")
            if backing:
                (self.sysfs / "backing_dev").write_text(backing)
            (self.sysfs / "disksize").write_text(str(size))
        except OSError:
            self.close()
            raise

    def mm_stat(self) -> list[int]:
        return [int(x) for x in (self.sysfs / "mm_stat").read_text().split()]

    def memory(self) -> dict:
        """Stored, compressed and held bytes, under `stat`'s (and mm_stat's) names."""
        return dict(zip(MEMORY, self.mm_stat(), strict=False))

    def bd_stat(self) -> list[int]:
        """bd_count, bd_reads, bd_writes: 4K pages."""
        return [int(x) for x in (self.sysfs / "bd_stat").read_text().split()]

    def writeback(self, kind: str) -> None:
        """zram's own writeback, as its users ask for it: `huge` (pages that
        did not compress), `idle` (pages marked idle, see mark_idle)."""
        (self.sysfs / "writeback").write_text(kind)

    def mark_idle(self) -> None:
        (self.sysfs / "idle").write_text("all")

    def close(self) -> None:
        # udev opens the device after each change; reset answers EBUSY meanwhile.
        for tries in range(RESET_TRIES, 0, -1):
            try:
                (self.sysfs / "reset").write_text("1")
                break
            except OSError as e:
                if e.errno != errno.EBUSY or tries == 1:
                    raise
                time.sleep(0.1)
        Path("/sys/class/zram-control/hot_remove").write_text(str(self.id))


class Trueno:
    """A trueno-ublk device made with `create --size SIZE OPTIONS`, deleted by
    close(). `cli` is the command that makes it: by default this
    interpreter's own trueno_ublk."""

    def __init__(self, size: str | int, options: str = "", cli: str = f"{sys.executable} -m trueno_ublk"):
        self.cli = cli
        self.path = sh(f"{cli} create --size {size} {options}").strip()

    def stat(self) -> dict:
        return json.loads(sh(f"{self.cli} stat --json {self.path}"))

    def memory(self) -> dict:
        stat = self.stat()          # a store that holds nothing (null) has none of them
        return {key: stat.get(key, 0) for key in MEMORY}

    def worker_pid(self) -> int:
        devices = json.loads(sh(f"{self.cli} list --json -o NAME,WORKER"))["devices"]
        return next(d["worker"] for d in devices if d["name"] == self.path)

    def close(self) -> None:
        sh(f"{self.cli} delete {self.path}")
