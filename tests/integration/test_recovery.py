"""A dead I/O worker: recovered with every page kept, or, without
recovery, the device removed and its I/O failed."""
import json
import os
import signal

import pytest

from conftest import run_cli, sh
from faults import FIO, PATTERN, alive, list_entry, record, start_fio, verified_io_across, wait_for, wait_for_io


def test_kill_9_of_the_worker_without_recovery_fails_io_and_removes_the_device(make_device):
    dev = make_device("--no-recovery")
    rec = record(dev)
    assert "USER_RECOVERY" not in rec["features"]
    fio = start_fio(dev, "--rw=randread --bs=4k --iodepth=32 --size=64M --time_based --runtime=1800")
    wait_for_io(dev)
    os.kill(rec["worker_pid"], signal.SIGKILL)
    fio.wait(timeout=120)
    assert fio.returncode != 0
    wait_for(lambda: not alive(rec["pid"]), what="the daemon to exit")
    assert list_entry(dev) is None and not os.path.exists(dev)


def test_recovery_after_the_worker_is_killed_keeps_every_page(make_device):
    # The default, without systemd: I/O held while there is no server.
    dev = make_device("--queues", "2")
    verify = f"--bs=4k --iodepth=32 --size=96M --verify=crc32c --verify_fatal=1 {PATTERN}"
    sh(f"{FIO} --filename={dev} --rw=randwrite {verify}")
    run_cli("set", dev, "--mem-limit", "1G")          # set on the live device: kept across recovery
    before = json.loads(run_cli("stat", "--json", dev).stdout)
    rec = record(dev)
    # Reads and writes in flight while the worker dies: the kernel holds
    # them and reissues them to the new worker. The readers read on until
    # the writers, who need the new worker to finish, are done.
    verified_io_across(dev, "96M", lambda: os.kill(rec["worker_pid"], signal.SIGKILL), "the recovery", 4000)
    entry = list_entry(dev)
    assert entry["state"] == "live" and entry["recoveries"] == 1
    assert entry["worker"] != rec["worker_pid"] and entry["pid"] == rec["pid"]
    after = json.loads(run_cli("stat", "--json", dev).stdout)
    assert after["pages_stored"] >= before["pages_stored"]
    assert after["mem_limit"] == before["mem_limit"] == 1 << 30
    sh(f"{FIO} --filename={dev} --rw=randwrite --verify_only {verify}")
    # And it can die again: a second recovery.
    os.kill(entry["worker"], signal.SIGKILL)
    wait_for(lambda: record(dev)["recoveries"] == 2 and record(dev)["state"] == "live",
             what="the second recovery")
    assert list_entry(dev)["recoveries"] == 2 and list_entry(dev)["state"] == "live"
    sh(f"{FIO} --filename={dev} --rw=randwrite --verify_only {verify}")



def test_asked_to_fail_io_without_a_server_a_dead_worker_fails_it_but_keeps_every_page(make_device):
    """--io-without-server fail (Linux 6.13+): the kernel fails I/O while the
    device has no server (FAIL_IO), so the reads in flight when the worker
    dies fail, and the supervisor's next worker serves every page again."""
    from trueno_ublk.base.control import Control, feature_names
    with Control() as ctrl:
        if "USER_RECOVERY_FAIL_IO" not in feature_names(ctrl.features):
            pytest.skip("Linux 6.12 cannot fail I/O without a server")
    dev = make_device("--io-without-server", "fail")
    verify = f"--bs=4k --iodepth=32 --size=64M --verify=crc32c --verify_fatal=1 {PATTERN}"
    sh(f"{FIO} --filename={dev} --rw=randwrite {verify}")
    rec = record(dev)
    assert "USER_RECOVERY_FAIL_IO" in rec["features"]
    readers = start_fio(dev, "--rw=randread --bs=4k --iodepth=64 --size=64M --time_based --runtime=1800")
    wait_for_io(dev)
    os.kill(rec["worker_pid"], signal.SIGKILL)
    readers.wait(timeout=120)
    assert readers.returncode != 0
    wait_for(lambda: record(dev)["recoveries"] == 1 and record(dev)["state"] == "live", what="the recovery")
    sh(f"{FIO} --filename={dev} --rw=randwrite --verify_only {verify}")
