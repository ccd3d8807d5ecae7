"""The backing device on the real driver: pages written back and read
again under fio verify; faults from real device-mapper targets over a loop
device (a table switched to `error` fails reads, then writes); a full
device; kill -9 of the worker in the middle of a writeback; writes past
--mem-limit spilled instead of failed."""
import json
import os
import signal
import subprocess

import pytest

from conftest import CLI, TEXT, MiB, run_cli, sh
from faults import FIO, PATTERN, record, start_load, stop_load, wait_for, wait_for_io
from one_line_error import assert_one_line_error

# Reads and writes of another block device, the same on every kernel.
pytestmark = pytest.mark.same_on_every_kernel


def stat(dev) -> dict:
    return json.loads(run_cli("stat", "--json", dev).stdout)


def verify(region: str, pattern: str = PATTERN, bs: str = "4k") -> str:
    """fio's options for verified I/O of `region`. Filling a region and
    checking it again takes 64K requests (`bs`): each is 16 pages to the
    store, and costs a sixteenth of the round trips 4K ones would."""
    return f"--bs={bs} --iodepth=16 {region} --verify=crc32c --verify_fatal=1 {pattern}"


def test_pages_move_to_the_backing_device_and_back_under_fio_verify(backing, make_device):
    bk = backing()
    dev = make_device("--queues", "2", "--backing-dev", bk.path, "--writeback-after", "0", size="128M")
    sh(f"{FIO} --filename={dev} --rw=randwrite {verify('--offset=0 --size=32M', bs='64k')}")
    # Pages leave for the device while fio rewrites and reads others (its
    # own among them, which it then reads back from there): once fio is
    # under way, two rounds at least, until pages moved, fio running throughout.
    job = start_load(dev, f"--rw=randrw {verify('--offset=64M --size=32M')}")
    moved = rounds = 0
    try:
        wait_for_io(dev)
        while rounds < 2 or moved == 0:
            assert job.poll() is None, f"fio ended before the writeback it was to see: {job.stderr.read()}"
            assert rounds < 100, "100 rounds of idle and writeback, and no page moved"
            run_cli("idle", dev)
            moved += int(run_cli("writeback", dev, "--type", "all").stdout.split()[1])
            rounds += 1
    finally:
        status = stop_load(job)
    assert status == 0, job.stderr.read()
    assert moved > 0
    sh(f"{FIO} --filename={dev} --rw=randwrite --verify_only {verify('--offset=0 --size=32M', bs='64k')}")
    count, reads, writes = map(int, run_cli("stat", "--bd-stat", dev).stdout.split())
    assert writes >= count > 0 and reads > 0
    assert stat(dev)["bd_read_errors"] == stat(dev)["bd_write_errors"] == 0


def test_a_failing_backing_device_loses_no_page_and_is_counted(backing, make_device):
    bk = backing()
    dev = make_device("--backing-dev", bk.path, "--writeback-after", "0")
    data = os.urandom(4 * MiB)
    with open(dev, "r+b", buffering=0) as f:
        f.write(data)
    os.sync()
    assert run_cli("writeback", dev, "--type", "huge").stdout.split()[1] == "1024"
    # Reads fail: only those of pages on the device, with EIO.
    bk.switch("error")
    sh(f"dd if=/dev/urandom of={dev} bs=1M seek=8 count=1 oflag=direct status=none")
    failed = subprocess.run(["dd", f"if={dev}", "of=/dev/null", "bs=4k", "count=1", "iflag=direct"],
                            capture_output=True, text=True)
    assert failed.returncode != 0 and "Input/output error" in failed.stderr
    sh(f"dd if={dev} of=/dev/null bs=1M skip=8 count=1 iflag=direct status=none")
    assert stat(dev)["bd_read_errors"] >= 1 and stat(dev)["failed_reads"] >= 1
    # Writes fail: the pages stay in RAM, the command says so.
    result = run_cli("writeback", dev, "--type", "huge", check=False)
    assert_one_line_error(result, "Input/output error")
    after = stat(dev)
    assert after["bd_write_errors"] == 1 and after["bd_count"] == 1024 and after["huge_pages"] == 256
    # The device back: every page as written.
    bk.switch("linear")
    with open(dev, "rb", buffering=0) as f:
        assert f.read(4 * MiB) == data


def test_a_full_backing_device_stops_writeback_not_io(backing, make_device):
    bk = backing(1 * MiB)
    dev = make_device("--backing-dev", bk.path, "--writeback-after", "0")
    sh(f"{FIO} --filename={dev} --rw=write --buffer_compress_percentage=0 {verify('--size=8M', '')}")
    assert run_cli("writeback", dev, "--type", "all").stdout.split()[1] == "256"
    assert run_cli("writeback", dev, "--type", "all").stdout.split()[1] == "0"
    sh(f"{FIO} --filename={dev} --rw=randrw --buffer_compress_percentage=0 {verify('--size=8M', '')}")


def test_kill_9_during_writeback_loses_no_page_and_leaks_no_block(backing, make_device):
    bk = backing(128 * MiB)
    dev = make_device("--backing-dev", bk.path, "--writeback-after", "0")
    # Real text first, whose compressed pages go packed, several to a block
    # (the writeback takes pages in order: the kill comes among them); then
    # fio's pages, which the entropy check mostly stores raw, a block each.
    sh(f"{TEXT} | head -c 16M > /tmp/text && dd if=/tmp/text of={dev} bs=1M oflag=direct status=none")
    text = f"dd if={dev} bs=1M count=16 iflag=direct status=none | cmp /tmp/text -"
    pages = verify("--offset=32M --size=96M", bs="64k")
    sh(f"{FIO} --filename={dev} --rw=write {pages}")
    worker = record(dev)["worker_pid"]
    writeback = subprocess.Popen([CLI, "writeback", dev, "--type", "all"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: stat(dev)["bd_count"] > 0, what="the writeback to begin")
    os.kill(worker, signal.SIGKILL)
    writeback.wait(timeout=120)
    wait_for(lambda: record(dev)["state"] == "live" and record(dev)["worker_pid"] != worker,
             timeout=120, what="the worker recovered")
    sh(text)
    sh(f"{FIO} --filename={dev} --rw=write --verify_only {pages}")
    # The writeback the kill cut short, finished: every stored page out
    # (same-filled ones need no room anywhere), the text's 4,096 in less
    # room than a block each.
    run_cli("writeback", dev, "--type", "all")
    st = stat(dev)
    assert st["bd_count"] == st["pages_stored"] - st["same_pages"] and st["compr_data_size"] == 0, st
    assert st["bd_used"] < st["bd_count"] * 4096 - 4 * MiB, st
    sh(text)
    # Every block in use is a page's or a payload's, as the new worker and
    # the writeback after it counted them: discarding every page frees them
    # all.
    sh(f"blkdiscard {dev}")
    assert stat(dev)["bd_count"] == stat(dev)["bd_used"] == 0


def test_writes_past_the_memory_limit_spill_and_none_fails(backing, make_device):
    bk = backing(96 * MiB)
    # Three times the limit: most pages go to the disk, spilled or, at the
    # limit, written there at once.
    dev = make_device("--mem-limit", "16M", "--backing-dev", bk.path, "--writeback-after", "0")
    sh(f"{FIO} --filename={dev} --rw=randwrite {verify('--size=48M', bs='64k')}")
    sh(f"{FIO} --filename={dev} --rw=randwrite --verify_only {verify('--size=48M', bs='64k')}")
    figures = stat(dev)
    assert figures["failed_writes"] == 0 and figures["bd_count"] > 0
    assert figures["mem_used_total"] <= 32 * MiB, figures


def test_backing_dev_errors_are_one_line(tmp_path):
    result = run_cli("create", "--size", "64M", "--backing-dev", "/dev/nonexistent", check=False)
    assert_one_line_error(result, "backing device /dev/nonexistent", "No such file")
    sparse = tmp_path / "sparse"
    sparse.write_bytes(b"")
    os.truncate(sparse, MiB)
    result = run_cli("create", "--size", "64M", "--backing-dev", sparse, check=False)
    assert_one_line_error(result, str(sparse))
