"""The RAM store against a plain bytearray model, driven by hypothesis."""
import os
import threading

import pytest
from hypothesis import given, settings, strategies as st

from trueno_ublk.codecs import codec_for
from trueno_ublk.stores import make_store
from trueno_ublk.stores.ram import CompressedRamStore

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
    st.sampled_from(["write", "read", "discard", "write_zeroes"]),
    st.integers(0, SECTORS - 1),
    st.integers(1, SECTORS),
    page_contents(),
    st.integers(0, 2**64 - 1),
)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@settings(max_examples=60, deadline=None)
@given(ops=st.lists(operation, max_size=30))
def test_store_matches_model(algorithm, ops):
    store = make_store("ram", SIZE, codec_for(algorithm))
    model = bytearray(SIZE)
    for op, start, count, kind, seed in ops:
        count = min(count, SECTORS - start)
        offset, length = start * SECTOR, count * SECTOR
        if op == "write":
            data = make_data(kind, length, seed)
            store.write(offset, memoryview(bytearray(data)))
            model[offset:offset + length] = data
        elif op == "read":
            out = bytearray(length)
            store.read(offset, memoryview(out))
            assert out == model[offset:offset + length]
        else:
            getattr(store, op)(offset, length)
            model[offset:offset + length] = bytes(length)
    out = bytearray(SIZE)
    store.read(0, memoryview(out))
    assert out == model


def test_same_filled_pages_are_kept_as_one_word():
    store = CompressedRamStore(1 << 20, codec_for("lz4"))
    store.write(0, memoryview(bytearray(4096)))
    store.write(4096, memoryview(bytearray(b"\x01\x02\x03\x04\x05\x06\x07\x08" * 512)))
    assert store.stats()["same_pages"] == 2
    assert store.stats()["compr_data_size"] == 0
    out = bytearray(8192)
    store.read(0, memoryview(out))
    assert out[4096:] == b"\x01\x02\x03\x04\x05\x06\x07\x08" * 512 and out[:4096] == bytes(4096)


def test_incompressible_pages_are_stored_raw():
    store = CompressedRamStore(1 << 20, codec_for("lz4"))
    store.write(0, memoryview(bytearray(os.urandom(4096))))
    assert store.stats()["huge_pages"] == 1
    assert store.stats()["compr_data_size"] == 4096


def test_discard_frees_pages():
    store = CompressedRamStore(1 << 30, codec_for("lz4"))
    text = bytearray(make_data("text", 64 * 4096, 3))
    store.write(0, memoryview(text))
    assert store.stats()["pages_stored"] == 64
    store.discard(0, 1 << 30)
    assert store.stats()["pages_stored"] == 0


def test_concurrent_partial_writes_to_one_page_are_not_lost():
    # Eight threads each own one 512-byte sector of the same page.
    store = CompressedRamStore(4096, codec_for("lz4"))

    def writer(sector):
        for i in range(200):
            store.write(sector * 512, memoryview(bytearray(bytes([sector * 16 + i % 16]) * 512)))

    threads = [threading.Thread(target=writer, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = bytearray(4096)
    store.read(0, memoryview(out))
    assert out == b"".join(bytes([s * 16 + 199 % 16]) * 512 for s in range(8))


def test_null_store_keeps_nothing():
    store = make_store("null", 1 << 20, None)
    store.write(0, memoryview(bytearray(b"x" * 4096)))
    assert store.stats() == {}


def test_unknown_store():
    with pytest.raises(ValueError, match="valid ones are ram, null"):
        make_store("disk", 1 << 20, None)


def _held(store) -> int:
    """Memory holding data: mem_used_total less the reserve kept faulted in
    ahead of writes, which a refill thread tops up at its own pace."""
    st = store.stats()
    return st["mem_used_total"] - st["mem_reserve"]


def _half_compressible_pages(count):
    return [os.urandom(2048) + bytes(2048) for _ in range(count)]


def test_compact_frees_chunks_and_keeps_data():
    pages = _half_compressible_pages(512)
    store = CompressedRamStore(len(pages) * 4096, codec_for("lz4"))
    for i, page in enumerate(pages):
        store.write(i * 4096, memoryview(bytearray(page)))
    for i in range(len(pages)):
        if i % 4:
            store.discard(i * 4096, 4096)
    before = _held(store)
    freed = store.compact()
    assert freed > 0 and store.stats()["pages_compacted"] == freed
    assert _held(store) < before * 0.6
    out = bytearray(4096)
    for i in range(0, len(pages), 4):
        store.read(i * 4096, memoryview(out))
        assert out == pages[i]


def test_mem_limit_refuses_new_chunks_and_keeps_old_data():
    pages = _half_compressible_pages(64)
    store = CompressedRamStore(1 << 20, codec_for("lz4"))
    store.set_mem_limit(64 << 10)                    # one chunk
    stored = 0
    with pytest.raises(MemoryError):
        for i, page in enumerate(pages):
            store.write(i * 4096, memoryview(bytearray(page)))
            stored += 1
    assert 0 < stored < len(pages)
    out = bytearray(4096)
    for i in range(stored):
        store.read(i * 4096, memoryview(out))
        assert out == pages[i]


def test_memory_goes_back_after_discard():
    store = CompressedRamStore(8 << 20, codec_for("lz4"))
    empty = _held(store)
    for i, page in enumerate(_half_compressible_pages(2048)):
        store.write(i * 4096, memoryview(bytearray(page)))
    assert _held(store) > empty + (4 << 20)
    store.discard(0, 8 << 20)
    assert _held(store) <= empty + 4096     # the allocator's bookkeeping remains
    assert store.stats()["mem_reserve"] <= 8 << 20


def _fill(store, pages):
    for i, page in enumerate(pages):
        store.write(i * 4096, memoryview(bytearray(page)))


def _assert_holds(store, pages):
    out = bytearray(4096)
    for i, page in enumerate(pages):
        store.read(i * 4096, memoryview(out))
        assert out == page, f"page {i}"


def test_a_new_store_attaches_to_the_arena_and_finds_every_page():
    size = 2048 * 4096
    first = CompressedRamStore(size, codec_for("lz4"))
    pages = [make_data(("zero", "fill", "text", "random")[i % 4], 4096, i) for i in range(2048)]
    _fill(first, pages)
    first.discard(100 * 4096, 700 * 4096)             # a whole map page given back
    pages[100:800] = [bytes(4096)] * 700
    before = {**first.stats(), "held": _held(first)}
    # The old daemon is gone; only the memfd remains.
    fd = os.dup(first.fd)
    first.close()
    second = CompressedRamStore(size, codec_for("lz4"), arena_fd=fd, attach=True)
    _assert_holds(second, pages)
    after = {**second.stats(), "held": _held(second)}
    for key in ("pages_stored", "same_pages", "huge_pages", "compr_data_size", "held"):
        assert after[key] == before[key], key
    # The rebuilt allocator hands out free slots and never a used one.
    rewritten = [make_data("text", 4096, 10_000 + i) for i in range(2048)]
    for i in range(0, 2048, 3):
        second.write(i * 4096, memoryview(bytearray(rewritten[i])))
        pages[i] = rewritten[i]
    _assert_holds(second, pages)
    second.discard(0, size)
    assert second.stats()["pages_stored"] == 0
    second.close()
    os.close(fd)


def test_attach_refuses_an_arena_of_another_size_or_garbage():
    store = CompressedRamStore(1 << 20, codec_for("lz4"))
    with pytest.raises(ValueError, match="does not hold"):
        CompressedRamStore(2 << 20, codec_for("lz4"), arena_fd=store.fd, attach=True)
    os.pwrite(store.fd, b"garbage!", 0)
    with pytest.raises(ValueError, match="does not hold"):
        CompressedRamStore(1 << 20, codec_for("lz4"), arena_fd=store.fd, attach=True)
    store.close()


def test_attach_refuses_entries_that_point_outside_the_arena():
    store = CompressedRamStore(1 << 20, codec_for("lz4"))
    _fill(store, [make_data("text", 4096, 1)])
    os.pwrite(store.fd, (1 << 62 | 0xFFFFFF << 24).to_bytes(8, "little"), 4096)  # page 0's entry
    with pytest.raises(ValueError, match="does not hold"):
        CompressedRamStore(1 << 20, codec_for("lz4"), arena_fd=store.fd, attach=True)
    store.close()


def test_threads_writing_discarding_and_compacting_keep_every_page():
    pages_per_thread, threads = 256, 4
    store = CompressedRamStore(threads * pages_per_thread * 4096, codec_for("lz4"))
    final = {}
    errors = []

    def worker(t):
        try:
            for round_ in range(6):
                for j in range(pages_per_thread):
                    index = t * pages_per_thread + j
                    if (j + round_) % 3 == 0:
                        store.discard(index * 4096, 4096)
                        final[index] = bytes(4096)
                    else:
                        data = make_data(("text", "random", "fill")[j % 3], 4096, index * 7 + round_)
                        store.write(index * 4096, memoryview(bytearray(data)))
                        final[index] = data
        except Exception as e:          # surfaced below: a thread's assert is not the test's
            errors.append(e)

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    while any(w.is_alive() for w in workers):
        store.compact()
    for w in workers:
        w.join()
    assert not errors
    _assert_holds(store, [final[i] for i in range(threads * pages_per_thread)])
    store.close()


def test_batch_server_serves_and_counts_every_kind_of_request():
    from trueno_ublk._shim import ffi, lib
    buf_size, depth, dev_size = 16384, 4, 1 << 20
    for store in (CompressedRamStore(dev_size, codec_for("zstd")), make_store("null", dev_size, None)):
        buffers = bytearray(depth * buf_size)
        counts = ffi.new("struct io_counters *")
        server = store.batch_server(buffers, buf_size, dev_size, counts)
        reqs = ffi.new("struct shim_request[]", depth)
        text = make_data("text", buf_size, 5)
        buffers[0:buf_size] = text
        batch = [(lib.UBLK_IO_OP_WRITE, 8, 32),             # 16 KiB at 4 KiB
                 (lib.UBLK_IO_OP_READ, 2048, 1),            # past the end
                 (lib.UBLK_IO_OP_FLUSH, 0, 0),
                 (99, 0, 1)]                                # no such operation
        for i, (op, sector, count) in enumerate(batch):
            reqs[i].tag, reqs[i].op, reqs[i].start_sector, reqs[i].nr_sectors = i, op, sector, count
        lib.batch_serve(server, reqs, len(batch))
        assert [reqs[i].result for i in range(4)] == [buf_size, -5, 0, -95]
        assert (counts.writes, counts.written_bytes, counts.flushes, counts.invalid_io) == (1, buf_size, 1, 2)
        reqs[0].tag, reqs[0].op, reqs[0].start_sector, reqs[0].nr_sectors = 1, lib.UBLK_IO_OP_READ, 8, 32
        lib.batch_serve(server, reqs, 1)
        assert reqs[0].result == buf_size and counts.reads == 1
        if store.name == "ram":
            assert buffers[buf_size:2 * buf_size] == text
        store.close()
