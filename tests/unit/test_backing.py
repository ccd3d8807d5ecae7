"""The backing device under the ram store, against a bytearray model:
pages written back, read from it, rewritten, discarded, the worker
replaced (the free map rebuilt from the page map); its failures; and which
paths `open_backing` takes."""
import os
import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trueno_ublk.base.codecs import codec_for
from trueno_ublk.stores import open_store
from trueno_ublk.stores.backing import BackingError, open_backing
from trueno_ublk.stores.direct import DirectClient

PAGE = 4096
PAGES = 16


def backing_file(path, pages) -> tuple[int, int]:
    subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=4096", f"count={pages}", "conv=fsync",
                    "status=none"], check=True)
    return open_backing(str(path))


def backed_store(fd: int, size: int, pages: int, **options):
    """A ram store of `pages` pages writing back to `fd` (`size` bytes), and
    a client serving it."""
    store = open_store("page", pages * PAGE, codec_for("lz4"), **options)
    store.set_backing(fd, size)
    return store, DirectClient(store)


@pytest.fixture
def backed(tmp_path):
    """make(blocks, pages, **options): a page store of `pages` pages writing
    back to a file of `blocks` pages, as (store, client, the file's size);
    both closed after the test."""
    opened = []

    def make(blocks: int, pages: int, **options):
        fd, size = backing_file(tmp_path / "dev", blocks)
        store, client = backed_store(fd, size, pages, **options)
        opened.append((store, fd))
        return store, client, size
    yield make
    for store, fd in opened:
        store.close()
        os.close(fd)


def page(kind: str, seed: int) -> bytes:
    if kind == "zero":
        return bytes(PAGE)
    if kind == "text":
        return (f"page {seed} of text\n".encode() * PAGE)[:PAGE]
    return os.urandom(PAGE)


operation = st.tuples(st.sampled_from(["write", "read", "discard", "writeback", "idle", "recompress", "reattach"]),
                      st.integers(0, PAGES - 1), st.sampled_from(["zero", "text", "random"]),
                      st.integers(0, 3))


@pytest.fixture(scope="module")
def backing(tmp_path_factory):
    fd, size = backing_file(tmp_path_factory.mktemp("backing") / "dev", PAGES // 2)
    yield fd, size
    os.close(fd)


@settings(max_examples=80, deadline=None)
@given(ops=st.lists(operation, max_size=40))
def test_pages_written_back_read_the_same(backing, ops):
    fd, size = backing
    store, client = backed_store(fd, size, PAGES)
    model = bytearray(PAGES * PAGE)
    arenas = []
    for op, index, kind, seed in ops:
        at = index * PAGE
        if op == "write":
            data = page(kind, seed)
            client.write(at, data)
            model[at:at + PAGE] = data
        elif op == "read":
            assert client.read(at, PAGE) == model[at:at + PAGE]
        elif op == "discard":
            client.discard(at, PAGE)
            model[at:at + PAGE] = bytes(PAGE)
        elif op == "writeback":
            store.writeback(("idle", "huge", "incompressible", "all")[seed], PAGES)
        elif op == "idle":
            store.mark_idle(0)
        elif op == "recompress":
            store.recompress("idle", "zstd:6", 0)
        else:                               # a new worker: the free map rebuilt from the page map
            arena = os.dup(store.fd)
            store.close()
            store, client = backed_store(fd, size, PAGES, arena_fd=arena, attach=True)
            arenas.append(arena)
        stats = store.stats()
        assert stats["bd_used"] <= size
    assert client.read(0, PAGES * PAGE) == model
    # Every block in use is a page's: discarding everything frees them all.
    client.discard(0, PAGES * PAGE)
    assert store.stats()["bd_count"] == 0
    store.close()
    for arena in arenas:
        os.close(arena)


def read_calls_during(work):
    """(work()'s result, the read system calls this thread made meanwhile,
    pread included), from /proc/thread-self/io's syscr less its own reads:
    this thread's alone (the store's background thread reads /proc/vmstat).
    The client serves the request in the calling thread."""
    fd = os.open("/proc/thread-self/io", os.O_RDONLY)
    try:
        def count() -> int:
            return int(re.search(rb"syscr: (\d+)", os.pread(fd, 4096, 0)).group(1))
        own = -count() + count()
        start = count()
        result = work()
        return result, count() - start - own
    finally:
        os.close(fd)


def test_a_request_reads_neighbouring_written_back_pages_together(backed):
    store, client, _ = backed(64, 64)
    data = [os.urandom(PAGE) for _ in range(20)]
    client.write(PAGE, b"".join(data))                      # pages 1-20: groups of 8 cut at 8 and 16
    assert store.writeback("huge", 1000) == 20
    client.write(5 * PAGE, bytes(PAGE))                     # a run broken in its middle
    data[4] = bytes(PAGE)
    read, calls = read_calls_during(lambda: client.read(0, 24 * PAGE))
    assert read == bytes(PAGE) + b"".join(data) + bytes(3 * PAGE)
    assert calls == 2                                       # pages 1-4, then 6-20 across two groups
    assert store.stats()["bd_reads"] == 19


def test_writeback_frees_memory_and_counts_like_bd_stat(backed):
    store, client, size = backed(64, 256)
    data = [os.urandom(PAGE) for _ in range(100)]
    for i, d in enumerate(data):
        client.write(i * PAGE, d)
    held = store.stats()["compr_data_size"]
    assert store.writeback("huge", 1000) == 64               # the device is full at 64
    stats = store.stats()
    assert (stats["bd_count"], stats["bd_writes"], stats["backing_bytes"]) == (64, 64, size)
    assert stats["compr_data_size"] == held - 64 * PAGE
    assert store.writeback("huge", 1000) == 0               # full: stops, nothing fails
    assert all(client.read(i * PAGE, PAGE) == d for i, d in enumerate(data))
    assert store.stats()["bd_reads"] == 64
    client.write(0, bytes(PAGE))                            # a rewrite frees its block
    assert store.stats()["bd_count"] == 63


def test_compressed_pages_are_written_back_packed_taking_their_payloads_room(tmp_path):
    """A compressed page goes to the device as its payload, packed with the
    batch's others (a frame's once for all its pages): the device holds
    the payloads in about their own room, and a block is free once no
    payload is on it. Real text, so payloads vary in size and straddle
    blocks."""
    sources = b"".join(p.read_bytes() for folder in ("trueno_ublk", "tests", "scripts")
                       for p in sorted((Path(__file__).parents[2] / folder).rglob("*.py")))
    text = [sources[i * PAGE:(i + 1) * PAGE] for i in range(128)]
    assert len(text[-1]) == PAGE, "not enough source text"
    fd, size = backing_file(tmp_path / "dev", 128)
    store, client = backed_store(fd, size, 256)
    for i, d in enumerate(text):
        client.write(i * PAGE, d)
    store.recompress("all", "zstd:6", 64)                   # the first half in frames and zstd
    payloads = store.stats()["compr_data_size"]
    assert store.writeback("all", 1000) == len(text)
    st = store.stats()
    assert st["bd_count"] == len(text) and st["compr_data_size"] == 0 and st["bd_used"] < size
    # Each payload takes its length (2 bytes) and its 16-byte grid beside
    # it; the last block is partly filled.
    assert payloads < st["bd_used"] <= payloads + 18 * len(text) + PAGE
    assert all(client.read(i * PAGE, PAGE) == d for i, d in enumerate(text))
    # Read in order, the blocks after a page's record are read with it,
    # and the next pages' records found there: far fewer reads than pages.
    assert store.stats()["bd_reads"] < len(text) // 8
    # A new worker finds every record, and reads them.
    arena = os.dup(store.fd)
    store.close()
    store, client = backed_store(fd, size, 256, arena_fd=arena, attach=True)
    assert store.stats()["bd_used"] == st["bd_used"]
    assert all(client.read(i * PAGE, PAGE) == d for i, d in enumerate(text))
    # Rewritten pages give back the blocks no other payload is on; all
    # gone, every block.
    half = len(text) // 2
    for i in range(half):
        client.write(i * PAGE, bytes(PAGE))
    assert store.stats()["bd_used"] < st["bd_used"] * 3 // 4
    assert all(client.read(i * PAGE, PAGE) == (bytes(PAGE) if i < half else d) for i, d in enumerate(text))
    client.discard(0, 256 * PAGE)
    assert store.stats()["bd_used"] == store.stats()["bd_count"] == 0
    store.close()
    os.close(arena)
    os.close(fd)


def test_writeback_limit_is_a_budget(backed):
    store, client, _ = backed(64, 64)
    for i in range(40):
        client.write(i * PAGE, os.urandom(PAGE))
    store.set_writeback_limit(10)
    assert store.writeback("all", 1000) == 10
    assert store.writeback("all", 1000) == 0 and store.stats()["bd_count"] == 10
    store.set_writeback_limit(None)
    assert store.writeback("all", 1000) == 30


def test_a_store_without_backing_refuses_writeback():
    store = open_store("page", 64 * PAGE, codec_for("lz4"))
    with pytest.raises(ValueError, match="no backing device"):
        store.writeback("all", 10)
    store.close()


def test_a_map_past_the_device_is_refused(tmp_path):
    fd, size = backing_file(tmp_path / "dev", 8)
    store, client = backed_store(fd, size, 16)
    for i in range(8):
        client.write(i * PAGE, os.urandom(PAGE))
    assert store.writeback("all", 8) == 8
    arena = os.dup(store.fd)
    store.close()
    small_fd, small = backing_file(tmp_path / "small", 4)
    store = open_store("page", 16 * PAGE, codec_for("lz4"), arena_fd=arena, attach=True)
    with pytest.raises(ValueError, match="not the device these pages were written to"):
        store.set_backing(small_fd, small)
    store.close()
    for f in (fd, small_fd, arena):
        os.close(f)


@pytest.mark.parametrize("make, why", [
    (lambda p: subprocess.run(["truncate", "-s", "1M", p], check=True), "holes"),
    (lambda p: subprocess.run(["fallocate", "-l", "1M", p], check=True), "unwritten"),
    (lambda p: None, "No such file"),
])
def test_files_a_write_would_allocate_in_are_refused(tmp_path, make, why):
    path = str(tmp_path / "f")
    make(path)
    with pytest.raises(BackingError, match=why):
        open_backing(path)


def test_a_character_device_is_refused():
    with pytest.raises(BackingError, match="not a block device or a regular file"):
        open_backing("/dev/null")


def test_a_failed_write_leaves_every_page_in_ram(tmp_path):
    fd, size = backing_file(tmp_path / "dev", 16)
    read_only = os.open(tmp_path / "dev", os.O_RDONLY | os.O_DIRECT)   # every write fails
    store, client = backed_store(read_only, size, 16)
    data = [os.urandom(PAGE) for _ in range(16)]
    for i, d in enumerate(data):
        client.write(i * PAGE, d)
    with pytest.raises(OSError, match="writing back after 0 pages"):
        store.writeback("all", 16)
    stats = store.stats()
    assert (stats["bd_write_errors"], stats["bd_count"], stats["huge_pages"]) == (1, 0, 16)
    assert all(client.read(i * PAGE, PAGE) == d for i, d in enumerate(data))
    store.close()
    for f in (fd, read_only):
        os.close(f)


def test_writes_past_the_memory_limit_spill_to_the_backing_device(tmp_path):
    """Four times the limit written, no write fails: the background spills
    the coldest pages, and what finds no room goes straight to the device."""
    from trueno_ublk.stores.policy import Policy
    fd, size = backing_file(tmp_path / "dev", 4096)                 # 16 MiB
    store, client = backed_store(fd, size, 4096, policy=Policy(writeback_after=0))
    store.set_mem_limit(4 << 20)
    data = [os.urandom(PAGE) for _ in range(4096)]
    for i in range(0, 4096, 32):
        client.write(i * PAGE, b"".join(data[i:i + 32]))            # raises on a failed write
    stats = store.stats()
    assert stats["bd_count"] >= 4096 - (4 << 20) // PAGE and stats["compr_data_size"] <= 4 << 20
    assert all(client.read(i * PAGE, PAGE) == d for i, d in enumerate(data))
    store.close()
    os.close(fd)


def test_without_room_on_the_device_writes_at_the_limit_fail(tmp_path):
    from trueno_ublk.stores.direct import StoreError
    from trueno_ublk.stores.policy import Policy
    fd, size = backing_file(tmp_path / "dev", 64)
    store, client = backed_store(fd, size, 4096, policy=Policy(writeback_after=0))
    store.set_mem_limit(1 << 20)
    with pytest.raises(StoreError):
        for i in range(0, 4096, 32):
            client.write(i * PAGE, os.urandom(32 * PAGE))
    assert store.stats()["bd_count"] == 64
    store.close()
    os.close(fd)
