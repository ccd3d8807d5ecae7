"""Data written through /dev/ublkbN comes back intact, at every size and alignment."""
import mmap
import os
import random

import pytest

from conftest import sh

FIO = ("fio --name=verify --filename={dev} --ioengine=io_uring --direct=1 "
       "--rw=randwrite --bs={bs} --iodepth=32 --size=48M --verify=crc32c "
       "--verify_fatal=1 --randrepeat=1 --output-format=terse {data}")
DATA = {
    "compressible": "--buffer_compress_percentage=50 --refill_buffers",
    "random": "--refill_buffers",
}


@pytest.fixture
def device(shared_device):
    """Every test here writes and checks its own data: they share one device."""
    return shared_device


@pytest.mark.parametrize("data", sorted(DATA))
@pytest.mark.parametrize("bs", ["4k", "8k", "64k", "1M"])
def test_fio_randwrite_verify(device, bs, data):
    sh(FIO.format(dev=device, bs=bs, data=DATA[data]) + " --do_verify=1")


def test_data_survives_writer_closing(device):
    # One fio process writes and exits; a second one, a new opener, verifies.
    job = FIO.format(dev=device, bs="16k", data=DATA["compressible"])
    sh(job + " --do_verify=0")
    sh(job + " --verify_only")


def _aligned(size):
    return mmap.mmap(-1, size)      # page-aligned, as O_DIRECT needs


def test_unaligned_512_byte_direct_io(device):
    rng = random.Random(7)
    region = 64 * 4096
    model = bytearray(os.urandom(region))
    fd = os.open(device, os.O_RDWR | os.O_DIRECT)
    try:
        buf = _aligned(region)
        buf[:] = model
        assert os.pwrite(fd, buf, 0) == region
        for _ in range(300):
            sectors = rng.randint(1, 24)
            offset = rng.randrange(0, region // 512 - sectors) * 512
            data = os.urandom(sectors * 512)
            wbuf = _aligned(sectors * 512)
            wbuf[:] = data
            assert os.pwrite(fd, wbuf, offset) == len(data)
            model[offset:offset + len(data)] = data
            roff = rng.randrange(0, region // 512 - sectors) * 512
            rbuf = _aligned(sectors * 512)
            assert os.preadv(fd, [rbuf], roff) == sectors * 512
            assert rbuf[:] == model[roff:roff + sectors * 512]
        whole = _aligned(region)
        assert os.preadv(fd, [whole], 0) == region
        assert whole[:] == model
    finally:
        os.close(fd)


def _read(dev, offset, length):
    with open(dev, "rb", buffering=0) as f:
        f.seek(offset)
        return f.read(length)


@pytest.mark.parametrize("tool", ["blkdiscard", "blkdiscard --zeroout"])
def test_discarded_range_reads_zeros(device, tool):
    sh(f"dd if=/dev/urandom of={device} bs=1M count=8 oflag=direct status=none")
    # Bounds off the page grid: the partial pages at both ends keep their data.
    offset, length = 1024 * 1024 + 1536, 3 * 1024 * 1024 + 512
    before = _read(device, 0, 8 << 20)
    sh(f"{tool} --offset {offset} --length {length} {device}")
    after = _read(device, 0, 8 << 20)
    assert after[offset:offset + length] == bytes(length)
    assert after[:offset] == before[:offset]
    assert after[offset + length:] == before[offset + length:]


def test_never_written_reads_zeros(make_device):
    dev = make_device(size="64G")     # sparse: costs nothing until written
    assert _read(dev, 63 << 30, 1 << 20) == bytes(1 << 20)
