"""The cold-page policy on the real driver: pages recompressed in the
background and by hand (alone, and neighbours in frames), rewritten pages
hot again, high-entropy pages raw, all under fio verify across two queues;
a worker killed in the middle of a recompression; the commands and their
bad input."""
import json
import os
import signal
import subprocess

import pytest

from trueno_ublk.devices import admin

from conftest import CLI, TEXT, run_cli, sh
from faults import FIO, PATTERN, record, start_load, stop_load, wait_for

pytestmark = pytest.mark.same_on_every_kernel

MiB = 1 << 20
PAGES_PER_MIB = MiB // 4096


def stat(dev) -> dict:
    return json.loads(run_cli("stat", "--json", dev).stdout)


def verify(region: str, pattern: str = PATTERN) -> str:
    return f"--bs=4k --iodepth=16 {region} --verify=crc32c --verify_fatal=1 {pattern}"


def region(dev, name: str, mib: int, offset_mib: int, source: str) -> str:
    """Write `mib` MiB from `source` (a shell command) at `offset_mib`,
    kept in /tmp/NAME; returns the command that checks it."""
    sh(f"{source} | head -c {mib}M > /tmp/{name} && "
       f"dd if=/tmp/{name} of={dev} bs=1M seek={offset_mib} oflag=direct status=none")
    return f"dd if={dev} bs=1M skip={offset_mib} count={mib} iflag=direct status=none | cmp /tmp/{name} -"


def test_pages_change_tiers_under_fio_verify_across_two_queues(make_device):
    dev = make_device("--queues", "2", "--recompress-after", "1", "--recompress-algorithm", "zstd:3")
    cold = region(dev, "cold", 8, 0, TEXT)
    # Random bytes, as encrypted or compressed data look.
    noise = region(dev, "noise", 8, 16, "cat /dev/urandom")
    st = stat(dev)
    assert st["entropy_raw_pages"] >= 0.95 * 8 * PAGES_PER_MIB, st      # raw, no codec tried
    assert st["entropy_pages"][7] >= st["entropy_raw_pages"]
    # Two jobs writing (fio checks their data at the end), each its own
    # region (fio's verify needs that), one a CPU so that both queues serve;
    # light enough to leave the background to its work. They write until
    # every move below happened, however long the background takes.
    two_jobs = verify("--offset=32M --size=1M --offset_increment=1M --numjobs=2 --thread")
    fio = start_load(dev, f"--rw=randwrite --rate_iops=20 {two_jobs}")
    try:
        # 7 MiB of the 8: at least 3 of the 4 rewritten below are among them.
        wait_for(lambda: stat(dev)["recompressed_pages"] >= 7 * PAGES_PER_MIB, timeout=600,
                 what="the background to recompress the cold pages", detail=lambda: stat(dev))
        sh(cold)
        sh(noise)
        # Rewritten pages start hot, in the fast codec again: they leave the
        # tier (and, a second later, are cold enough to come back to it).
        def left(st):
            return st["recompressions"] - st["recompressed_pages"]
        before = left(stat(dev))
        cold = region(dev, "cold", 4, 0, f"{TEXT} | tail -c 8M")
        assert left(stat(dev)) >= before + 3 * PAGES_PER_MIB
        sh(cold)
        # By hand, at full speed, while the jobs go on.
        assert "pages recompressed" in run_cli("recompress", dev, timeout=900).stdout
        assert fio.poll() is None, f"fio ended before the moves it was to see: {fio.stderr.read()}"
    finally:
        status = stop_load(fio)
    assert status == 0, fio.stderr.read()
    queues = admin.request(int(dev.removeprefix("/dev/ublkb")), "stat")["queues"]
    assert len(queues) == 2 and all(q["cpu_seconds"] > 0 for q in queues), queues
    st = stat(dev)
    assert st["failed_reads"] == st["failed_writes"] == 0
    # Text neighbours share frames (once a dictionary is trained on the cold
    # text, a page left out of one is a frame of its own).
    assert st["tiers"]["framed"]["pages"] > st["frames"] > 0
    assert st["tiers"]["raw"]["pages"] >= 0.95 * 8 * PAGES_PER_MIB
    sh(cold)
    sh(noise)
    sh(f"{FIO} --filename={dev} --rw=randwrite --verify_only {two_jobs}")


def test_kill_9_during_recompression_keeps_every_page(make_device):
    dev = make_device("--recompress-after", "0")
    pages = verify("--size=64M")
    sh(f"{FIO} --filename={dev} --rw=randwrite {pages}")
    rec = record(dev)
    by_hand = subprocess.Popen([CLI, "recompress", dev, "--algorithm", "zstd:19"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: stat(dev)["recompressions"] >= 100, timeout=120, what="recompression under way")
    os.kill(rec["worker_pid"], signal.SIGKILL)
    assert by_hand.wait(timeout=60) != 0                # its daemon died under it: one line
    assert len(by_hand.stderr.read().strip().splitlines()) == 1
    wait_for(lambda: record(dev)["recoveries"] == 1 and record(dev)["state"] == "live",
             timeout=60, what="the recovery")
    st = stat(dev)
    assert st["recompressed_pages"] >= 100             # the moves done so far, found by the new worker
    sh(f"{FIO} --filename={dev} --rw=randwrite --verify_only {pages}")
    run_cli("recompress", dev, "--algorithm", "zstd:3", "--max-pages", "500", timeout=600)
    sh(f"{FIO} --filename={dev} --rw=randwrite --verify_only {pages}")


def test_idle_and_recompress_by_hand_and_their_figures(make_device):
    dev = make_device("--recompress-after", "0")
    text = region(dev, "text", 8, 0, TEXT)
    marked = run_cli("idle", dev).stdout
    assert marked.startswith(f"{dev}: ") and int(marked.split()[1]) >= 2000
    assert run_cli("idle", dev, "--age", "1h").stdout == f"{dev}: 0 pages marked idle\n"   # marked already
    sh(f"dd if={dev} of=/dev/null bs=4k count=256 iflag=direct status=none")   # 1 MiB hot again
    out = run_cli("recompress", dev, "--type", "idle", "--max-pages", "300").stdout
    assert out.startswith(f"{dev}: 300 pages recompressed, ")
    st = stat(dev)
    assert st["recompressed_pages"] == 300 and st["policy"]["recompress_after"] == 0
    out = run_cli("recompress", dev, "--type", "idle").stdout
    assert st["recompressed_pages"] + int(out.split()[1]) == stat(dev)["recompressed_pages"]
    # The first MiB was read after the marks: no page of it moved.
    assert stat(dev)["recompressed_pages"] <= 8 * PAGES_PER_MIB - 256
    # The first pass trained a dictionary on the idle text; the text reads
    # back through it (below).
    assert stat(dev)["dict_bytes"] > 0
    shown = run_cli("stat", dev).stdout
    assert "tier_recompressed" in shown and "recompress-algorithm" in shown
    listed = json.loads(run_cli("list", "--json", "-o", "NAME,RECOMPRESSED,IDLE-PAGES").stdout)["devices"]
    assert next(d for d in listed if d["name"] == dev)["recompressed"] > 0
    assert "trueno_ublk_recompressions_total" in run_cli("metrics").stdout
    sh(text)
    for args, why in ((["recompress", dev, "--algorithm", "lzo"], "unknown algorithm"),
                      (["recompress", dev, "--type", "warm"], "is not one of"),
                      (["idle", dev, "--age", "-5"], "--age must be a duration")):
        result = run_cli(*args, check=False)
        assert result.returncode != 0 and why in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
