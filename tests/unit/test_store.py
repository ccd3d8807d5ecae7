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
    before = store.stats()["mem_used_total"]
    freed = store.compact()
    after = store.stats()
    assert freed > 0 and after["pages_compacted"] == freed
    assert after["mem_used_total"] < before * 0.6
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
    empty = store.stats()["mem_used_total"]
    for i, page in enumerate(_half_compressible_pages(2048)):
        store.write(i * 4096, memoryview(bytearray(page)))
    assert store.stats()["mem_used_total"] > empty + (4 << 20)
    store.discard(0, 8 << 20)
    assert store.stats()["mem_used_total"] <= empty + 4096     # the chunk free list remains
