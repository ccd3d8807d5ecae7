"""What ublk gained after 6.12, used where the kernel has it: live resize
(UPDATE_SIZE, 6.16), several threads per queue (PER_IO_DAEMON, 6.16) and
batched I/O commands (BATCH_IO, 7.0). On older kernels each is refused in
one line when asked for by name."""
import json
import os
import subprocess

from trueno_ublk.devices import admin

from conftest import run_cli, sh
from one_line_error import assert_one_line_error

MiB = 1 << 20
FIO = ("fio --name=resize --filename={dev} --ioengine=io_uring --direct=1 --rw=randwrite "
       "--bsrange=4k-256k --iodepth=16 --size=48M --verify=crc32c --verify_fatal=1 "
       "--randrepeat=1 --buffer_compress_percentage=50 --refill_buffers --output-format=terse")


def size_of(dev: str) -> int:
    return int(sh(f"blockdev --getsize64 {dev}"))


def listed_size(dev: str) -> int:
    devices = json.loads(run_cli("list", "--json", "-o", "NAME,DISKSIZE").stdout)["devices"]
    return next(d["disksize"] for d in devices if d["name"] == dev)


def test_resize_grows_under_fio_verify_and_never_drops_a_page(make_device):
    dev = make_device(size="64M")
    if "UPDATE_SIZE" not in json.loads(run_cli("stat", "--json", dev).stdout)["features"]:
        assert_one_line_error(run_cli("resize", dev, "128M", check=False), "6.16")
        return
    job = FIO.format(dev=dev)
    fio = subprocess.Popen(job + " --do_verify=1", shell=True, cwd="/tmp", text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    run_cli("resize", dev, "256M")                  # while fio writes and verifies
    assert size_of(dev) == 256 * MiB
    _, err = fio.communicate(timeout=900)
    assert fio.returncode == 0, err
    assert listed_size(dev) == 256 * MiB

    # The new part holds data; a shrink that would drop it is refused.
    sh(f"head -c {MiB} /dev/urandom > /tmp/tail && "
       f"dd if=/tmp/tail of={dev} bs=1M seek=200 oflag=direct conv=notrunc status=none")
    assert_one_line_error(run_cli("resize", dev, "128M", check=False), "stored past 128M")
    assert size_of(dev) == 256 * MiB
    sh(f"cmp -n {MiB} /tmp/tail {dev} --ignore-initial=0:{200 * MiB}")

    # Once discarded, the tail goes; what lies before it stays.
    sh(f"blkdiscard -o {128 * MiB} -l {128 * MiB} {dev}")
    run_cli("resize", dev, "128M")
    assert size_of(dev) == 128 * MiB and listed_size(dev) == 128 * MiB
    sh(job + " --verify_only")
    assert_one_line_error(run_cli("resize", dev, "2G", check=False), "room for 1G")


def test_negotiated_features_are_shown(device):
    # USER_COPY (6.5) is on every kernel we run on; NO_AUTO_PART_SCAN where
    # the kernel offers it (7.0), and then the kernel scans no partitions.
    # (What each kernel offers: checked in every kernel's guest.)
    features = json.loads(run_cli("stat", "--json", device).stdout)["features"]
    assert "USER_COPY" in features and "CMD_IOCTL_ENCODE" in features
    devices = json.loads(run_cli("list", "--json", "-o", "NAME,FEATURES").stdout)["devices"]
    assert next(d for d in devices if d["name"] == device)["features"] == ",".join(features)
    major = int(os.uname().release.split(".")[0])
    assert ("NO_AUTO_PART_SCAN" in features) == (major >= 7)


def features(dev: str) -> list[str]:
    return json.loads(run_cli("stat", "--json", dev).stdout)["features"]


MIXED_SIZES = "--bssplit=512/10:4k/50:64k/30:1M/10"


def test_batched_io_commands_under_fio_verify(make_device):
    if int(os.uname().release.split(".")[0]) < 7:         # BATCH_IO: 7.0
        result = run_cli("create", "--size", "64M", "--io-commands", "batch", check=False)
        assert_one_line_error(result, "7.0", "BATCH_IO")
        return
    dev = make_device(size="128M")                        # batched by default
    assert "BATCH_IO" in features(dev)
    job = FIO.format(dev=dev).replace("--bsrange=4k-256k", MIXED_SIZES)
    sh(job + " --do_verify=1 --numjobs=1 --iodepth=64")
    sh(job + " --verify_only")
    per_tag = make_device("--io-commands", "per-tag", size="64M")
    assert "BATCH_IO" not in features(per_tag)
    sh(FIO.format(dev=per_tag).replace("--size=48M", "--size=16M") + " --do_verify=1")


def test_two_threads_serve_one_queue_under_fio_verify(make_device):
    if int(os.uname().release.split(".")[0]) < 7:         # PER_IO_DAEMON: 6.16
        result = run_cli("create", "--size", "64M", "--queue-threads", "2", check=False)
        assert_one_line_error(result, "6.16", "PER_IO_DAEMON")
        return
    dev = make_device("--queue-threads", "2", size="128M")
    job = FIO.format(dev=dev).replace("--bsrange=4k-256k", MIXED_SIZES)
    sh(job + " --do_verify=1")
    # Both threads served: each has spent CPU on the queue's tags.
    served = {q["id"]: q["cpu_seconds"] for q in admin.request(int(dev[len("/dev/ublkb"):]), "stat")["queues"]}
    assert set(served) == {"0.0", "0.1"} and all(served.values()), served
    sh(job + " --verify_only")
