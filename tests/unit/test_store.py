"""The stores against a plain bytearray model, driven by hypothesis.

Every request goes through the queue server, as in production (a
DirectClient feeds it request arrays instead of the kernel)."""
import errno
import os
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trueno_ublk.base.codecs import codec_for
from trueno_ublk.stores import open_store
from trueno_ublk.stores.direct import DirectClient, StoreError


def ram(size, algorithm="lz4", **options):
    """A ram store and a client serving it."""
    store = open_store("page", size, codec_for(algorithm), **options)
    return store, DirectClient(store)

SECTOR = 512
SECTORS = 64                       # a 32 KiB device: 8 pages
SIZE = SECTORS * SECTOR
ALGORITHMS = ["lz4", "lz4hc", "zstd", "zstd:5", "none"]


def page_contents():
    return st.sampled_from(["zero", "fill", "text", "random"])


def make_data(kind, length, seed):
    if kind == "zero":
        return bytes(length)
    if kind == "fill":
        return (seed.to_bytes(8, "little") * (length // 8 + 1))[:length]
    if kind == "text":
        return (f"line {seed} of some text\n".encode() * (length // 10 + 1))[:length]
    return os.urandom(length)


operation = st.tuples(
    st.sampled_from(["write", "read", "discard", "write_zeroes", "idle", "recompress", "compact", "reattach"]),
    st.integers(0, SECTORS - 1),
    st.integers(1, SECTORS),
    page_contents(),
    st.integers(0, 2**64 - 1),
)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@settings(max_examples=60, deadline=None)
@given(ops=st.lists(operation, max_size=30))
def test_store_matches_model(algorithm, ops):
    store, client = ram(SIZE, algorithm)
    model = bytearray(SIZE)
    fds = []                                # arenas held for the stores attached to them
    for op, start, count, kind, seed in ops:
        count = min(count, SECTORS - start)
        offset, length = start * SECTOR, count * SECTOR
        if op == "write":
            data = make_data(kind, length, seed)
            client.write(offset, data)
            model[offset:offset + length] = data
        elif op == "read":
            assert client.read(offset, length) == model[offset:offset + length]
        elif op == "idle":                  # pages change form, never contents
            store.mark_idle(0)
        elif op == "recompress":
            store.recompress(("idle", "huge", "all")[seed % 3], "zstd:6" if seed % 2 else "lz4hc", 0)
        elif op == "compact":
            store.compact()
        elif op == "reattach":              # a new worker: the allocator rebuilt from the map
            fd = os.dup(store.fd)
            store.close()
            store, client = ram(SIZE, algorithm, arena_fd=fd, attach=True)
            fds.append(fd)
        else:
            getattr(client, op)(offset, length)
            model[offset:offset + length] = bytes(length)
    assert client.read(0, SIZE) == model
    store.close()
    for fd in fds:
        os.close(fd)


def test_same_filled_pages_are_kept_as_one_word():
    store, client = ram(1 << 20)
    client.write(0, bytes(4096))
    client.write(4096, b"\x01\x02\x03\x04\x05\x06\x07\x08" * 512)
    assert store.stats()["same_pages"] == 2
    assert store.stats()["compr_data_size"] == 0
    out = client.read(0, 8192)
    assert out[4096:] == b"\x01\x02\x03\x04\x05\x06\x07\x08" * 512 and out[:4096] == bytes(4096)


def test_incompressible_pages_are_stored_raw():
    store, client = ram(1 << 20)
    client.write(0, os.urandom(4096))
    assert store.stats()["huge_pages"] == 1
    assert store.stats()["compr_data_size"] == 4096


def test_discard_frees_pages():
    store, client = ram(1 << 30)
    text = make_data("text", 64 * 4096, 3)
    client.write(0, text[:32 * 4096])
    client.write(32 * 4096, text[32 * 4096:])
    assert store.stats()["pages_stored"] == 64
    client.discard(0, 1 << 30)
    assert store.stats()["pages_stored"] == 0


def test_concurrent_partial_writes_to_one_page_are_not_lost():
    # Eight threads each own one 512-byte sector of the same page.
    store, client = ram(4096)

    def writer(sector):
        own = DirectClient(store)           # one queue server per thread, as in production
        for i in range(200):
            own.write(sector * 512, bytes([sector * 16 + i % 16]) * 512)

    threads = [threading.Thread(target=writer, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert client.read(0, 4096) == b"".join(bytes([s * 16 + 199 % 16]) * 512 for s in range(8))


def test_null_store_keeps_nothing():
    store = open_store("null", 1 << 20)
    client = DirectClient(store)
    client.write(0, b"x" * 4096)
    assert store.stats() == {} and client.counts.writes == 1
    store.close()


def test_unknown_store():
    with pytest.raises(ValueError, match="valid ones are page, null"):
        open_store("disk", 1 << 20)


def _held(store) -> int:
    """Memory holding data: mem_used_total less the reserve kept faulted in
    ahead of writes, which a refill thread tops up at its own pace."""
    st = store.stats()
    return st["mem_used_total"] - st["mem_reserve"]


def _half_compressible_pages(count):
    return [os.urandom(2048) + bytes(2048) for _ in range(count)]


def _write_then_discard_three_in_four(count):
    pages = _half_compressible_pages(count)
    store, client = ram(len(pages) * 4096)
    for i, page in enumerate(pages):
        client.write(i * 4096, page)
    for i in range(len(pages)):
        if i % 4:
            client.discard(i * 4096, 4096)
    return pages, store, client


def test_compact_frees_chunks_and_keeps_data():
    # Too little to gain (about 5 chunks) for the background compactor.
    pages, store, client = _write_then_discard_three_in_four(160)
    before = _held(store)
    freed = store.compact()
    assert freed > 0 and store.stats()["pages_compacted"] == freed
    assert _held(store) < before * 0.6
    for i in range(0, len(pages), 4):
        assert client.read(i * 4096, 4096) == pages[i]


def test_sparse_chunks_are_compacted_in_the_background():
    # About 50 chunks to gain, more than an eighth of those in use: the
    # compactor thread empties them by itself within its next looks.
    pages, store, client = _write_then_discard_three_in_four(2048)
    before = _held(store)
    deadline = time.monotonic() + 10
    while store.stats()["pages_compacted"] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert store.stats()["pages_compacted"] > 0
    assert _held(store) < before * 0.6
    for i in range(0, len(pages), 4):
        assert client.read(i * 4096, 4096) == pages[i]


def test_mem_limit_refuses_new_chunks_and_keeps_old_data():
    pages = _half_compressible_pages(64)
    store, client = ram(1 << 20)
    store.set_mem_limit(64 << 10)                    # one chunk
    stored = 0
    with pytest.raises(StoreError) as refused:
        for i, page in enumerate(pages):
            client.write(i * 4096, page)
            stored += 1
    assert refused.value.errno == errno.EIO and client.counts.failed_writes == 1
    assert 0 < stored < len(pages)
    for i in range(stored):
        assert client.read(i * 4096, 4096) == pages[i]


def test_at_the_limit_a_page_goes_into_a_larger_free_slot():
    # The same path serves writes that find the reserve empty under memory
    # pressure (tests/integration/test_swap_pressure.py).
    big = _half_compressible_pages(64)
    small = [make_data("text", 4096, i) for i in range(2)]
    store, client = ram(1 << 20)
    store.set_mem_limit(64 << 10)                    # one chunk, of big pages' class
    stored = 0
    with pytest.raises(StoreError):
        for i, page in enumerate(big):
            client.write(i * 4096, page)
            stored += 1
    client.discard(0, 4096)                          # one free slot in the chunk
    compr = store.stats()["compr_data_size"]
    client.write(100 * 4096, small[0])               # its own class would need a chunk
    with pytest.raises(StoreError):
        client.write(101 * 4096, small[1])           # no free slot left
    assert client.read(100 * 4096, 4096) == small[0]
    st = store.stats()
    assert st["compr_data_size"] - compr >= 2048     # a big page's slot, slack included
    assert st["huge_pages"] == 0 and st["reserve_misses"] == 0
    # A new worker finds it; compaction moves it within the big class.
    fd = os.dup(store.fd)
    store.close()
    store, client = ram(1 << 20, arena_fd=fd, attach=True)
    assert client.read(100 * 4096, 4096) == small[0]
    assert store.stats()["mem_limit"] == 64 << 10    # the limit as last set, kept in the arena
    store.set_mem_limit(0)
    second = big[:stored // 2]                      # half a second chunk
    for i, page in enumerate(second):
        client.write((200 + i) * 4096, page)
    client.discard(4096, (stored - 1) * 4096)        # the first: the small page alone
    store.compact()
    assert store.stats()["pages_compacted"] > 0
    assert client.read(100 * 4096, 4096) == small[0]
    for i, page in enumerate(second):
        assert client.read((200 + i) * 4096, 4096) == page
    store.close()
    os.close(fd)


def test_memory_goes_back_after_discard():
    store, client = ram(8 << 20)
    empty = _held(store)
    for i, page in enumerate(_half_compressible_pages(2048)):
        client.write(i * 4096, page)
    assert _held(store) > empty + (4 << 20)
    client.discard(0, 8 << 20)
    assert _held(store) <= empty + 4096     # the allocator's bookkeeping remains
    assert store.stats()["mem_reserve"] <= 8 << 20


def _fill(client, pages):
    for i, page in enumerate(pages):
        client.write(i * 4096, page)


def _assert_holds(client, pages):
    for i, page in enumerate(pages):
        assert client.read(i * 4096, 4096) == page, f"page {i}"


def test_a_new_store_attaches_to_the_arena_and_finds_every_page():
    size = 2048 * 4096
    first, client = ram(size)
    pages = [make_data(("zero", "fill", "text", "random")[i % 4], 4096, i) for i in range(2048)]
    _fill(client, pages)
    client.discard(100 * 4096, 700 * 4096)            # a whole map page given back
    pages[100:800] = [bytes(4096)] * 700
    before = {**first.stats(), "held": _held(first)}
    # The old worker is gone; only the memfd remains.
    fd = os.dup(first.fd)
    first.close()
    second, client = ram(size, arena_fd=fd, attach=True)
    _assert_holds(client, pages)
    after = {**second.stats(), "held": _held(second)}
    for key in ("pages_stored", "same_pages", "huge_pages", "compr_data_size", "held"):
        assert after[key] == before[key], key
    # The rebuilt allocator hands out free slots and never a used one.
    rewritten = [make_data("text", 4096, 10_000 + i) for i in range(2048)]
    for i in range(0, 2048, 3):
        client.write(i * 4096, rewritten[i])
        pages[i] = rewritten[i]
    _assert_holds(client, pages)
    client.discard(0, size)
    assert second.stats()["pages_stored"] == 0
    second.close()
    os.close(fd)


def test_attach_refuses_an_arena_of_another_size_or_garbage():
    store, _ = ram(1 << 20)
    with pytest.raises(ValueError, match="does not hold"):
        ram(2 << 20, arena_fd=store.fd, attach=True)
    os.pwrite(store.fd, b"garbage!", 0)
    with pytest.raises(ValueError, match="does not hold"):
        ram(1 << 20, arena_fd=store.fd, attach=True)
    store.close()


def test_attach_refuses_an_arena_of_another_codec_and_the_check_says_so_first():
    """A takeover checks the arena before it touches the device
    (ps_arena_check): the same verdicts as attaching, without mapping it."""
    from trueno_ublk._native import lib
    from trueno_ublk.stores.page import pages_for
    store, client = ram(1 << 20, "lz4")
    _fill(client, [make_data("text", 4096, 1)])
    pages = pages_for(1 << 20)
    assert lib.ps_arena_check(store.fd, pages, codec_for("lz4").kind) == 0
    assert lib.ps_arena_check(store.fd, pages, codec_for("zstd").kind) == -errno.EMEDIUMTYPE
    assert lib.ps_arena_check(store.fd, pages * 2, codec_for("lz4").kind) == -errno.EUCLEAN
    with pytest.raises(ValueError, match="not compressed with zstd"):
        ram(1 << 20, "zstd", arena_fd=store.fd, attach=True)
    again, client = ram(1 << 20, "lz4", arena_fd=store.fd, attach=True)     # the right one still can
    assert client.read(0, 4096) == make_data("text", 4096, 1)
    again.close()
    other = os.memfd_create("not-an-arena")
    os.ftruncate(other, 1 << 20)
    assert lib.ps_arena_check(other, pages, codec_for("lz4").kind) == -errno.EUCLEAN
    os.close(other)
    store.close()


@pytest.mark.parametrize("magic, version", [(b"TRUENOA8", 8), (b"TRUENOA9", 9), (b"TRUENO10", 10)])
def test_an_arena_of_an_earlier_version_is_taken_and_made_the_current_one(magic, version):
    """An upgrade from the code before the backing device (8), the zram
    tier (9) or the dictionary (10) keeps every page: those versions differ
    only in having no page there, and no dictionary."""
    store, client = ram(1 << 20)
    _fill(client, [make_data("text", 4096, 1)])
    os.pwrite(store.fd, magic + version.to_bytes(4, "little"), 0)
    again, client = ram(1 << 20, arena_fd=store.fd, attach=True)
    assert client.read(0, 4096) == make_data("text", 4096, 1)
    assert os.pread(store.fd, 12, 0) == b"TRUENO11" + (11).to_bytes(4, "little")
    again.close()
    os.pwrite(store.fd, magic + (version - 1).to_bytes(4, "little"), 0)        # another: not taken
    with pytest.raises(ValueError, match="does not hold"):
        ram(1 << 20, arena_fd=store.fd, attach=True)
    store.close()


def test_attach_refuses_entries_that_point_outside_the_arena():
    store, client = ram(1 << 20)
    _fill(client, [make_data("text", 4096, 1)])
    os.pwrite(store.fd, (1 << 62 | 0xFFFFFF << 24).to_bytes(8, "little"), 4096)  # page 0's entry
    with pytest.raises(ValueError, match="does not hold"):
        ram(1 << 20, arena_fd=store.fd, attach=True)
    store.close()


def test_a_store_grows_and_shrinks_and_a_new_worker_finds_its_size():
    mib = 1 << 20
    store, client = ram(mib)
    pages = [make_data(("fill", "text", "random")[i % 3], 4096, i) for i in range(256)]
    _fill(client, pages)
    with pytest.raises(StoreError):
        client.write(3 * mib, pages[1])              # past the end
    store.resize(4 * mib)
    client.write(3 * mib, pages[1])
    with pytest.raises(ValueError, match="room for 16M"):
        store.resize(17 * mib)                       # 16 times the size it was made with
    with pytest.raises(ValueError, match="stored past"):
        store.resize(2 * mib)                        # would drop the page at 3 MiB
    assert store.pages_stored_from(2 * mib) == 1 and store.size == 4 * mib
    # A new worker attaches at the arena's size, not the one it asks for.
    fd = os.dup(store.fd)
    store.close()
    store, client = ram(mib, arena_fd=fd, attach=True)
    assert store.size == 4 * mib and client.read(3 * mib, 4096) == pages[1]
    _assert_holds(client, pages)
    client.discard(3 * mib, 4096)
    store.resize(mib)
    with pytest.raises(StoreError):
        client.read(3 * mib, 4096)
    _assert_holds(client, pages)
    store.resize(2 * mib)                            # grown again: the new part reads zeros
    assert client.read(mib, 4096) == bytes(4096)
    store.close()
    os.close(fd)


def test_threads_writing_discarding_compacting_and_recompressing_keep_every_page():
    pages_per_thread, threads = 256, 4
    store, client = ram(threads * pages_per_thread * 4096)
    final = {}
    errors = []

    def worker(t):
        own = DirectClient(store)           # one queue server per thread, as in production
        try:
            for round_ in range(6):
                for j in range(pages_per_thread):
                    index = t * pages_per_thread + j
                    if (j + round_) % 3 == 0:
                        own.discard(index * 4096, 4096)
                        final[index] = bytes(4096)
                    else:
                        # Runs of text pages: neighbours recompressed into frames.
                        data = make_data(("text", "random", "fill")[j // 4 % 3], 4096, index * 7 + round_)
                        own.write(index * 4096, data)
                        final[index] = data
        except Exception as e:          # surfaced below: a thread's assert is not the test's
            errors.append(e)

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    frames = 0
    while any(w.is_alive() for w in workers):
        store.compact()
        store.mark_idle(0)
        store.recompress("idle", "zstd:6", 0)
        frames = max(frames, store.stats()["frames"])
    for w in workers:
        w.join()
    assert not errors
    _assert_holds(client, [final[i] for i in range(threads * pages_per_thread)])
    assert store.stats()["recompressions"] > 0 and frames > 0
    store.close()


def test_the_queue_server_serves_and_counts_every_kind_of_request():
    buf_size, dev_size = 16384, 1 << 20
    for store in (open_store("page", dev_size, codec_for("zstd")), open_store("null", dev_size)):
        client = DirectClient(store, depth=4, buf_size=buf_size, helper=True)
        counts = client.counts
        text = make_data("text", buf_size, 5)
        client.buffer(0)[:] = text
        results = client.serve([("write", 4096, buf_size),          # 16 KiB at 4 KiB
                                ("read", dev_size, 512),            # past the end
                                ("flush", 0, 0),
                                (99, 0, 512)])                      # no such operation
        assert results == [buf_size, -errno.EIO, 0, -errno.EOPNOTSUPP]
        assert (counts.writes, counts.written_bytes, counts.flushes, counts.invalid_io) == (1, buf_size, 1, 2)
        assert client.serve([("read", 4096, buf_size)]) == [buf_size] and counts.reads == 1
        if store.name == "page":
            assert client.buffer(0) == text
        store.close()


def test_a_large_batch_split_with_the_helper_thread_is_served_whole():
    store = open_store("page", 8 << 20, codec_for("lz4"))
    client = DirectClient(store, depth=16, buf_size=128 << 10, helper=True)
    data = [make_data(("text", "random")[i % 2], 128 << 10, i) for i in range(16)]
    for tag, chunk in enumerate(data):
        client.buffer(tag)[:] = chunk
    assert client.serve([("write", i * (128 << 10), 128 << 10) for i in range(16)]) == [128 << 10] * 16
    for tag in range(16):
        client.buffer(tag)[:] = bytes(128 << 10)
    assert client.serve([("read", i * (128 << 10), 128 << 10) for i in range(16)]) == [128 << 10] * 16
    assert [bytes(client.buffer(tag)) for tag in range(16)] == data
    assert client.counts.writes == client.counts.reads == 16
    store.close()
