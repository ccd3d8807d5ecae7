"""Kernel zram as a tier (create --zram-device, --zram-entropy) on the real drivers:
pages routed by entropy to a real zram device and read back; a page that
leaves zram frees its copy there; a zram at its own mem_limit sends pages to
RAM instead; kill -9 of the worker with pages in every tier, zram and the
backing device included; and one-line refusals."""
import json
import os
import random
import signal
import subprocess

import pytest

from trueno_ublk.benchmark.targets import Zram

from conftest import MiB, run_cli, sh
from faults import record, wait_for
from one_line_error import assert_one_line_error

PAGE = 4096
# Reads, writes and discards of another block device, the same on every kernel.
pytestmark = pytest.mark.same_on_every_kernel


def stat(dev) -> dict:
    return json.loads(run_cli("stat", "--json", dev).stdout)


def tiers(dev) -> dict:
    return {name: t["pages"] for name, t in json.loads(run_cli("stat", "--json", dev).stdout)["tiers"].items()}


def write_direct(dev, offset: int, data: bytes) -> None:
    subprocess.run(["dd", f"of={dev}", "bs=4096", f"seek={offset // PAGE}", "oflag=direct", "conv=notrunc",
                    "status=none"], input=data, check=True)


def read_direct(dev, offset: int, length: int) -> bytes:
    return subprocess.run(["dd", f"if={dev}", "bs=4096", f"skip={offset // PAGE}", f"count={length // PAGE}",
                           "iflag=direct", "status=none"], capture_output=True, check=True).stdout


# Text-like data made in place (reading real files over the guest's 9p
# share is slow under emulation): words of a small vocabulary, about 4.5
# bits of entropy a byte, which LZ4 shrinks and zstd shrinks further.
WORDS = [w.encode() + b" " for w in (
    "the page store keeps each page compressed in memory and writes cold pages back to a "
    "device when the limit is near while the kernel zram tier holds the pages routed there "
    "by their entropy so that reads find them again after a worker dies").split()]
THREE_LETTERS = bytes(b"abc"[i % 3] for i in range(256))


def text_pages(n: int) -> bytes:
    """Pages --zram-entropy 6 sends to zram (under 6 bits a byte)."""
    return b"".join(random.choices(WORDS, k=n * PAGE // 4))[:n * PAGE]


def three_letter_pages(n: int) -> bytes:
    """Random letters of three: under 2 bits of entropy a byte, yet no page
    same-filled."""
    return os.urandom(n * PAGE).translate(THREE_LETTERS)


@pytest.fixture
def zram():
    """make(size) -> a kernel zram device, removed after the test (after
    the ublk device: make_device's clean-up runs first, set up later)."""
    made = []

    def make(size=64 * MiB):
        made.append(Zram(size))
        return made[-1]
    yield make
    for z in made:
        z.close()


def test_tiered_sends_low_entropy_pages_to_zram_and_frees_them_there_when_they_leave(zram, make_device):
    z = zram()
    dev = make_device("--zram-device", z.path, "--zram-entropy", "6", size="64M")
    text, noise = text_pages(256), os.urandom(256 * PAGE)
    write_direct(dev, 0, text)
    write_direct(dev, 4 * MiB, noise)
    figures = stat(dev)
    assert figures["zram_pages"] == 256 and figures["huge_pages"] == 256, figures
    assert z.memory()["orig_data_size"] == 256 * PAGE
    assert figures["zram_mem_used_total"] == z.memory()["mem_used_total"] > 0
    assert read_direct(dev, 0, len(text)) == text and read_direct(dev, 4 * MiB, len(noise)) == noise
    assert stat(dev)["zram_reads"] >= 256
    # Rewritten with noise (to the store), half of it; discarded, the rest:
    # each page gone from zram frees its copy there.
    write_direct(dev, 0, noise[:128 * PAGE])
    sh(f"blkdiscard --offset {128 * PAGE} --length {128 * PAGE} {dev}")
    assert stat(dev)["zram_pages"] == 0 and z.memory()["orig_data_size"] == 0
    assert read_direct(dev, 0, 128 * PAGE) == noise[:128 * PAGE]
    assert read_direct(dev, 128 * PAGE, 128 * PAGE) == bytes(128 * PAGE)
    assert stat(dev)["zram_discard_errors"] == 0


def test_a_zram_at_its_memory_limit_sends_pages_to_ram_and_none_fails(zram, make_device):
    z = zram()
    (z.sysfs / "mem_limit").write_text(str(1 * MiB))
    dev = make_device("--zram-device", z.path, size="64M")
    text = text_pages(2048)
    write_direct(dev, 0, text)
    figures = stat(dev)
    assert figures["zram_write_errors"] > 0 and figures["failed_writes"] == 0, figures
    assert 0 < figures["zram_pages"] < 2048 and figures["compr_data_size"] > 0
    assert read_direct(dev, 0, len(text)) == text


def test_kill_9_with_pages_in_every_tier_loses_none(zram, backing, make_device):
    z, bk = zram(), backing()
    # Text (4-5 bits of entropy a byte) stays in the store; three letters
    # (under 2) go to zram.
    dev = make_device("--zram-device", z.path, "--zram-entropy", "2",
                      "--backing-dev", bk.path, "--writeback-after", "0", "--recompress-after", "0", size="64M")
    pages = 64
    text = text_pages(2 * pages)
    regions = {}

    def put(name, data):
        regions[name] = (len(regions) * pages * PAGE, data)
        write_direct(dev, *regions[name])
    put("recompressed", text[:pages * PAGE])            # then made cold and recompressed
    run_cli("idle", dev)
    run_cli("recompress", dev, "--type", "idle")
    put("backing", os.urandom(pages * PAGE))            # raw, then written back
    run_cli("writeback", dev, "--type", "huge")
    put("fast", text[pages * PAGE:])
    put("raw", os.urandom(pages * PAGE))
    put("zram", three_letter_pages(pages))
    put("same", b"\x5a" * pages * PAGE)
    before = tiers(dev)
    assert before["recompressed"] + before["framed"] == pages, before
    assert all(before[name] == pages for name in ("backing", "fast", "raw", "zram", "same")), before
    worker = record(dev)["worker_pid"]
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: record(dev)["state"] == "live" and record(dev)["worker_pid"] != worker,
             timeout=60, what="the worker recovered")
    assert tiers(dev) == before
    for name, (offset, data) in regions.items():
        assert read_direct(dev, offset, len(data)) == data, name
    # Every page in zram and on the backing device is still counted as one:
    # discarding them all frees both.
    sh(f"blkdiscard {dev}")
    after = stat(dev)
    assert after["zram_pages"] == after["bd_count"] == 0 and z.memory()["orig_data_size"] == 0


def test_zram_device_errors_are_one_line(zram):
    small = zram(16 * MiB)
    result = run_cli("create", "--size", "64M", "--zram-device", small.path, check=False)
    assert_one_line_error(result, small.path, "less than --size")
    result = run_cli("create", "--size", "16M", "--zram-device", "/dev/null", "--zram-entropy", "6", check=False)
    assert_one_line_error(result, "not a kernel zram device")
    sh(f"mkswap {small.path} && swapon {small.path}")
    try:
        result = run_cli("create", "--size", "16M", "--zram-device", small.path, check=False)
        assert_one_line_error(result, "in use")
    finally:
        sh(f"swapoff {small.path}")
    result = run_cli("create", "--size", "16M", "--zram-entropy", "6", check=False)
    assert_one_line_error(result, "--zram-entropy goes with --zram-device")
