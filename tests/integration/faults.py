"""What the fault tests share: the daemon's record, waits for events (never
fixed sleeps), fio in the background, a program living in swap."""
import json
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from trueno_ublk.devices.records import RUN_DIR

from conftest import run_cli

FIO = "fio --name=t --ioengine=io_uring --direct=1 --output-format=terse"
PATTERN = "--buffer_compress_percentage=50 --refill_buffers"
HERE = Path(__file__).parent
WORKLOAD_CGROUP = Path("/sys/fs/cgroup/trueno-ublk-test-workload")


def record(dev) -> dict:
    """The daemon's record, which `list` shows: cheap enough to poll (each
    `list` is a new process), so waits poll it and `list` checks the end."""
    return json.loads((RUN_DIR / f"{dev.removeprefix('/dev/ublkb')}.json").read_text())


def list_entry(dev) -> dict | None:
    out = run_cli("list", "--json", "-o", "NAME,STATE,PID,WORKER,RECOVERIES").stdout
    return next((d for d in json.loads(out)["devices"] if d["name"] == dev), None)


def wait_for(predicate, timeout=120.0, what="condition", detail=None):
    """`detail`: what to show when it times out (called only then). The
    timeout is a deadline only a hang reaches, generous for a machine
    whose cores other guests share: waiting ends at the event."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f"\n{detail()}" if detail else ""))
        time.sleep(0.1)


def start_fio(dev, args) -> subprocess.Popen:
    # exec: the process is fio itself, not a shell around it.
    return subprocess.Popen(f"exec {FIO} --filename={dev} {args}", shell=True, cwd="/tmp",
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def start_load(dev, args, deadline=1800) -> subprocess.Popen:
    """fio as load that lasts until the event a test waits for, however
    slow the machine: it runs until stop_load() (fio's --trigger-file),
    `deadline` seconds at most, which only a hang reaches. fio's verify
    phase never starts in such a run: check the data with --verify_only."""
    trigger = Path(tempfile.mkdtemp(prefix="fio-load-")) / "stop"
    fio = start_fio(dev, f"--time_based --runtime={deadline} --trigger-file={trigger} {args}")
    fio.trigger = trigger
    return fio


def stop_load(fio, timeout=120) -> int:
    """Stop a start_load() fio (it finishes the I/O in flight) and return
    its exit status: 0 when every request went right."""
    if fio.poll() is None:
        fio.trigger.touch()
    try:
        return fio.wait(timeout=timeout)
    finally:
        fio.trigger.unlink(missing_ok=True)
        fio.trigger.parent.rmdir()


def verified_io_across(dev, span: str, event, what: str, ios: int):
    """Random 4K reads of `dev`'s first `span` and verified 64K writes of
    the 64M after it, across `event()` (a fault, an upgrade), once `ios`
    requests completed. The readers read on until the writers -- who need
    the device served again to finish -- are done; both must end without an
    error. Returns event()'s result."""
    readers = start_load(dev, f"--rw=randread --bs=4k --iodepth=64 --size={span}")
    writers = start_fio(dev, f"--rw=randwrite --bs=64k --iodepth=8 --offset={span} --size=64M "
                             f"--verify=crc32c --verify_fatal=1 {PATTERN}")
    try:
        wait_for_io(dev, ios)
        result = event()
        writers.wait(timeout=300)
        assert readers.poll() is None, f"the readers ended before {what}: {readers.stderr.read()}"
    finally:
        stop_load(readers)
    for job in (readers, writers):
        assert job.returncode == 0, job.stderr.read()
    return result


def completed_ios(dev) -> int:
    """Reads plus writes the block layer has completed on `dev`."""
    fields = Path(f"/sys/block/{dev.removeprefix('/dev/')}/stat").read_text().split()
    return int(fields[0]) + int(fields[4])


def wait_for_io(dev, ios=2000):
    """Until `ios` more requests have completed: fio is under way, with
    requests in flight, when the fault strikes."""
    start = completed_ios(dev)
    wait_for(lambda: completed_ios(dev) >= start + ios, what=f"{ios} I/Os on {dev}")


def alive(pid) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):      # gone, or reaped while read
        return False
    return status != "Z"


def swap_used_kib(dev: str) -> int | None:
    """What /proc/swaps says `dev` holds; None when it is not swap."""
    for line in Path("/proc/swaps").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[0] == dev:
            return int(fields[3])
    return None


class Workload:
    """held_workload.py in a memory cgroup smaller than its pages, so that
    most of them live in swap; its lines arrive through a queue."""

    def __init__(self, mib: int, memory_max: int):
        WORKLOAD_CGROUP.mkdir(exist_ok=True)
        Path("/sys/fs/cgroup/cgroup.subtree_control").write_text("+memory")
        (WORKLOAD_CGROUP / "memory.max").write_text(str(memory_max))
        self.proc = subprocess.Popen(
            ["sh", "-c", f'echo $$ > {WORKLOAD_CGROUP}/cgroup.procs && exec "$@"', "sh",
             sys.executable, str(HERE / "held_workload.py"), str(mib)],
            cwd=HERE, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.passes = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def expect(self, line: str, timeout: float) -> None:
        got = self.lines.get(timeout=timeout)
        assert got == line, got

    def passes_done(self) -> int:
        """Passes reported so far; each line says the bad pages found yet."""
        while not self.lines.empty():
            fields = self.lines.get().split()
            assert fields[0] == "pass" and fields[3] == "0", f"pages came back wrong: {fields}"
            self.passes = int(fields[1])
        return self.passes

    def finish(self) -> None:
        self.proc.stdin.write("stop\n")
        self.proc.stdin.close()
        assert self.proc.wait(timeout=600) == 0
        self.passes_done()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        WORKLOAD_CGROUP.rmdir()
