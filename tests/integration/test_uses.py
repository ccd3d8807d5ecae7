"""What people use the device for: a filesystem, swap, several at once."""
import hashlib
import os
import tempfile

from trueno_ublk.devices.records import record_path

from conftest import run_cli, sh
from faults import wait_for


def test_ext4_files_survive_remount(device):
    with tempfile.TemporaryDirectory() as mnt:
        sh(f"mkfs.ext4 -q -F {device}")
        sh(f"mount {device} {mnt}")
        sums = {}
        try:
            for i in range(20):
                data = os.urandom(4096 * (i + 1)) + b"text " * 1000 * i
                path = os.path.join(mnt, f"file{i}")
                with open(path, "wb") as f:
                    f.write(data)
                sums[path] = hashlib.sha256(data).hexdigest()
        finally:
            sh(f"umount {mnt}")
        sh(f"echo 3 > /proc/sys/vm/drop_caches; fsck.ext4 -n -f {device}")
        sh(f"mount {device} {mnt}")
        try:
            for path, digest in sums.items():
                with open(path, "rb") as f:
                    assert hashlib.sha256(f.read()).hexdigest() == digest
        finally:
            sh(f"umount {mnt}")


def test_swap_on_and_off(device):
    sh(f"mkswap {device}")
    sh(f"swapon --discard {device}")
    try:
        assert os.path.realpath(device) in sh("cat /proc/swaps")
    finally:
        sh(f"swapoff {device}")
    assert device not in sh("cat /proc/swaps")


def _sectors(dev):
    with open(f"/sys/block/{os.path.basename(dev)}/size") as f:
        return int(f.read())


def test_two_devices_with_different_sizes(make_device):
    small, large = make_device(size="64M"), make_device(size="512M")
    assert small != large
    assert _sectors(small) * 512 == 64 << 20
    assert _sectors(large) * 512 == 512 << 20
    sh("dd if=/dev/urandom of=/tmp/a bs=1M count=4 status=none")
    sh(f"dd if=/tmp/a of={small} bs=1M oflag=direct status=none")
    sh(f"dd if=/dev/zero of={large} bs=1M count=4 oflag=direct status=none")
    sh(f"cmp -n {4 << 20} /tmp/a {small}")
    sh(f"cmp -n {4 << 20} /dev/zero {large}")


def test_two_queues(make_device):
    dev = make_device("--queues", "2")
    assert sorted(os.listdir(f"/sys/block/{os.path.basename(dev)}/mq")) == ["0", "1"]
    sh(f"fio --name=q2 --filename={dev} --ioengine=io_uring --direct=1 --rw=randwrite "
       f"--bs=4k --iodepth=32 --numjobs=2 --size=32M --offset_increment=32M "
       f"--verify=crc32c --verify_fatal=1 --cpus_allowed_policy=split --group_reporting")


def test_delete_removes_device_and_daemon(make_device):
    dev = make_device()
    n = int(dev.removeprefix("/dev/ublkb"))
    with open(record_path(n)) as f:
        pid = int(f.read().split('"pid": ')[1].split(",")[0])
    os.kill(pid, 0)
    assert run_cli("delete", dev).stdout.strip() == f"deleted {dev}"
    assert not os.path.exists(dev)
    assert not os.path.exists(f"/dev/ublkc{n}")
    assert not record_path(n).exists()
    stat = open(f"/proc/{pid}/stat").read() if os.path.exists(f"/proc/{pid}") else ""
    assert stat == "" or stat.split(")")[1].split()[0] == "Z"
    assert dev not in run_cli("list").stdout


def test_list_shows_a_live_daemon_and_a_killed_one_s_lost_device(make_device):
    import json
    import signal
    dev = make_device()
    columns = ("-o", "NAME,DISKSIZE,STATE,PID")
    devices = json.loads(run_cli("list", "--json", *columns).stdout)["devices"]
    entry = next(d for d in devices if d["name"] == dev)
    assert entry["state"] == "live" and entry["disksize"] == 256 << 20
    os.kill(entry["pid"], signal.SIGKILL)

    def state() -> str:
        devices = json.loads(run_cli("list", "--json", *columns).stdout)["devices"]
        return next(d for d in devices if d["name"] == dev)["state"]
    # Its guard ends the held I/O and records what became of the pages.
    wait_for(lambda: state() == "lost", what="list to show the killed daemon's device lost")
    run_cli("delete", dev)
    assert dev not in run_cli("list").stdout
