"""Clients that misbehave: the admin socket's, and many overlapping writers."""
import json
import socket
import threading

import pytest

from trueno_ublk.devices.records import socket_path

from conftest import run_cli, sh
from faults import FIO, PATTERN


@pytest.mark.same_on_every_kernel          # the daemon's admin socket
def test_admin_clients_that_disconnect_mid_reply_do_not_disturb_io(device):
    path = str(socket_path(int(device.removeprefix("/dev/ublkb"))))
    stop = threading.Event()

    def hostile():
        while not stop.is_set():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(path)
                s.sendall(b'{"command": "stat"}\n')
                s.recv(1)                                   # then hang up mid-reply
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(path)
                s.sendall(b'{"command": "stat"')             # truncated, then gone

    clients = [threading.Thread(target=hostile) for _ in range(4)]
    for c in clients:
        c.start()
    try:
        sh(f"{FIO} --filename={device} --rw=randwrite --bs=8k --iodepth=32 --size=48M "
           f"--verify=crc32c --verify_fatal=1 {PATTERN}")
    finally:
        stop.set()
        for c in clients:
            c.join()
    assert json.loads(run_cli("stat", "--json", device).stdout)["failed_writes"] == 0


@pytest.mark.parametrize("queues", [2])
def test_jobs_with_mixed_sizes_and_overlapping_writes_verify_across_queues(make_device, queues):
    dev = make_device("--queues", queues)
    # Four jobs, each in its own 32 MiB region, overwriting random blocks of
    # 512 B to 128 KiB (norandommap: ranges overlap); fio verifies the last
    # write of every block.
    sh(f"{FIO} --filename={dev} --numjobs=4 --offset_increment=32M --size=32M --rw=randwrite "
       f"--bsrange=512-128k --norandommap --io_size=48M --iodepth=16 --verify=crc32c "
       f"--verify_fatal=1 {PATTERN} --group_reporting", timeout=900)

