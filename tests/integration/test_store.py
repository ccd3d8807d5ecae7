"""The compressed store seen from outside: algorithms, counters, limits,
memory given back, and the stat/list/set/compact commands."""
import fcntl
import json
import os
import socket
import stat as statmod
import struct
from pathlib import Path

import psutil
import pytest

from trueno_ublk.devices import records

from conftest import run_cli, sh

pytestmark = pytest.mark.same_on_every_kernel

BLKDISCARD = 0x1277


def stats(dev) -> dict:
    return json.loads(run_cli("stat", "--json", dev).stdout)


def daemon_rss(dev) -> int:
    devices = json.loads(run_cli("list", "--json", "-o", "NAME,WORKER").stdout)["devices"]
    pid = next(d["worker"] for d in devices if d["name"] == dev)
    return psutil.Process(pid).memory_info().rss


def fio(dev, extra, size="32M"):
    sh(f"fio --name=t --filename={dev} --ioengine=io_uring --direct=1 --bs=4k --iodepth=32 "
       f"--size={size} --output-format=terse {extra}")


@pytest.mark.parametrize("algorithm", ["lz4", "lz4hc", "zstd", "zstd:3", "none"])
def test_each_algorithm_end_to_end(make_device, algorithm):
    dev = make_device("--algorithm", algorithm)
    fio(dev, "--rw=randwrite --verify=crc32c --verify_fatal=1 "
             "--buffer_compress_percentage=60 --refill_buffers")
    s = stats(dev)
    assert s["orig_data_size"] == 32 << 20
    if algorithm == "none":
        assert s["huge_pages"] == (32 << 20) // 4096
    else:
        assert s["compr_data_size"] < s["orig_data_size"] * 0.75


def test_counters_for_zero_patterned_and_random_pages(device):
    sh(f"dd if=/dev/zero of={device} bs=1M count=4 oflag=direct status=none")
    assert stats(device)["same_pages"] == 1024
    fio(device, "--rw=write --offset=4M --buffer_pattern=0xdeadbeef", size="4M")
    s = stats(device)
    assert s["same_pages"] == 2048 and s["huge_pages"] == 0 and s["compr_data_size"] == 0
    fio(device, "--rw=write --offset=8M --refill_buffers", size="4M")
    s = stats(device)
    assert s["huge_pages"] == 1024 and s["compr_data_size"] == 4 << 20
    assert s["orig_data_size"] == 12 << 20
    # Overwriting with zeros frees the slots and the huge count.
    sh(f"dd if=/dev/zero of={device} bs=1M count=4 seek=8 oflag=direct status=none")
    s = stats(device)
    assert s["huge_pages"] == 0 and s["compr_data_size"] == 0 and s["same_pages"] == 3072


def test_mem_limit_fails_writes_and_keeps_data(make_device):
    dev = make_device("--mem-limit", "4M")
    sh(f"head -c 2M /dev/urandom > /tmp/first; dd if=/tmp/first of={dev} bs=1M oflag=direct status=none")
    result = os.system(f"dd if=/dev/urandom of={dev} bs=1M count=16 seek=2 oflag=direct status=none 2>/dev/null")
    assert result != 0, "writing past mem_limit should fail"
    s = stats(dev)
    assert s["failed_writes"] > 0 and s["mem_limit"] == 4 << 20
    sh(f"cmp -n {2 << 20} /tmp/first {dev}")
    # Raised at run time, the limit lets the write through.
    run_cli("set", dev, "--mem-limit", "64M")
    sh(f"dd if=/dev/urandom of={dev} bs=1M count=16 seek=2 oflag=direct status=none")
    assert stats(dev)["mem_limit"] == 64 << 20


def test_discard_gives_memory_back(device):
    empty = stats(device)["mem_used_total"]
    rss_empty = daemon_rss(device)
    fio(device, "--rw=write --buffer_compress_percentage=50 --refill_buffers", size="128M")
    full = stats(device)
    assert full["mem_used_total"] > empty + (40 << 20)
    assert daemon_rss(device) > rss_empty + (40 << 20)
    sh(f"blkdiscard {device}")
    after = stats(device)
    assert after["orig_data_size"] == 0 and after["compr_data_size"] == 0
    assert after["mem_used_total"] <= empty + (1 << 20), (empty, after["mem_used_total"])
    assert daemon_rss(device) < rss_empty + (8 << 20)
    assert after["notify_free"] == (128 << 20) // 4096
    assert after["mem_used_max"] >= full["mem_used_total"]
    run_cli("set", device, "--reset-mem-used-max")
    assert stats(device)["mem_used_max"] < full["mem_used_total"]


def test_fragmented_memory_goes_back(device):
    # Discarding three pages in four leaves every chunk sparse; the store's
    # compactor (or `compact`, whichever comes first) empties most of them.
    fio(device, "--rw=write --buffer_compress_percentage=50 --refill_buffers", size="32M")
    full = stats(device)["mem_used_total"]
    fd = os.open(device, os.O_WRONLY)
    try:
        for page in range(0, (32 << 20) // 4096, 4):       # keep one page in four
            for p in (page + 1, page + 2, page + 3):
                fcntl.ioctl(fd, BLKDISCARD, struct.pack("QQ", p * 4096, 4096))
    finally:
        os.close(fd)
    sh(f"dd if={device} of=/tmp/before bs=1M count=32 iflag=direct status=none")
    out = run_cli("compact", device).stdout
    assert out.startswith(f"compacted {device}")
    after = stats(device)
    assert after["pages_compacted"] > 0
    assert after["mem_used_total"] < full * 0.6, (full, after["mem_used_total"])
    sh(f"dd if={device} of=/tmp/after bs=1M count=32 iflag=direct status=none; cmp /tmp/before /tmp/after")


def test_stat_formats(device):
    sh(f"dd if=/dev/zero of={device} bs=1M count=1 oflag=direct status=none")
    mm = run_cli("stat", "--mm-stat", device).stdout.split()
    assert len(mm) == 8 and int(mm[0]) == 1 << 20 and int(mm[5]) == 256
    io = run_cli("stat", "--io-stat", device).stdout.split()
    assert len(io) == 4 and all(x.isdigit() for x in io)
    text = run_cli("stat", device).stdout
    for key in ("orig_data_size", "mem_used_total", "same_pages", "compression_ratio", "failed_writes"):
        assert key in text


def test_list_columns(make_device):
    dev = make_device("--algorithm", "zstd", size="128M")
    sh(f"dd if=/dev/zero of={dev} bs=1M count=1 oflag=direct status=none")
    lines = run_cli("list").stdout.splitlines()
    assert lines[0].split() == ["NAME", "ALGORITHM", "DISKSIZE", "DATA", "COMPR", "TOTAL",
                                "STREAMS", "MOUNTPOINT", "STATE"]
    row = next(line.split() for line in lines if line.startswith(dev))
    assert row[1:4] == ["zstd", "128M", "1M"] and row[-1] == "live"
    raw = run_cli("list", "-n", "--raw", "-b", "-o", "NAME,DISKSIZE,ZERO-PAGES,STATE").stdout
    assert f"{dev} {128 << 20} 256 live" in raw.splitlines()
    devices = json.loads(run_cli("list", "--json", "--output-all").stdout)["devices"]
    entry = next(d for d in devices if d["name"] == dev)
    assert entry["disksize"] == 128 << 20 and entry["zero-pages"] == 256 and entry["queues"] == 1
    bad = run_cli("list", "-o", "NAME,BOGUS", check=False)
    assert bad.returncode != 0 and "unknown column 'BOGUS'" in bad.stderr


def test_requests_skip_the_io_scheduler(device):
    # The kernel would give a one-queue device (this fixture's) mq-deadline.
    n = device.removeprefix("/dev/")
    assert "[none]" in Path(f"/sys/block/{n}/queue/scheduler").read_text()


def test_swap_mountpoint_in_list(device):
    sh(f"mkswap {device} >/dev/null; swapon {device}")
    try:
        assert "[SWAP]" in run_cli("list").stdout
    finally:
        sh(f"swapoff {device}")


def test_admin_socket_is_private_and_survives_garbage(device):
    n = int(device.removeprefix("/dev/ublkb"))
    path = str(records.socket_path(n))
    st = os.stat(path)
    assert statmod.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0

    def ask(payload: bytes, read=True):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(path)
            s.sendall(payload)
            if not read:
                return None
            s.shutdown(socket.SHUT_WR)
            return s.makefile("rb").readline()

    for payload in (b"garbage\n", b"[1,2]\n", b'{"command": "reboot"}\n',
                    b'{"command": "set", "mem_limit": "lots"}\n', b'{"command": 5}\n',
                    b'{"command": "stat", "extra": 1}\n', b"\xff\xfe\n", b"x" * 100000 + b"\n"):
        reply = json.loads(ask(payload))
        assert reply["ok"] is False and reply["error"]
    ask(b'{"command": "st', read=False)                 # truncated, then gone
    assert json.loads(ask(b'{"command": "stat"}\n'))["ok"] is True
    fio(device, "--rw=randwrite --verify=crc32c --verify_fatal=1", size="8M")
