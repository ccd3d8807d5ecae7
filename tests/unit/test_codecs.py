import os

import pytest

from trueno_ublk.base.codecs import codec_for
from trueno_ublk.stores import open_store
from trueno_ublk.stores.direct import DirectClient

PAGE = (b"some text that repeats " * 200)[:4096]


@pytest.mark.parametrize("name", ["lz4", "lz4hc", "zstd", "zstd:1", "zstd:19"])
def test_round_trip_through_the_store(name):
    store = open_store("page", 3 * 4096, codec_for(name))
    client = DirectClient(store)
    pages = (PAGE, os.urandom(4096), PAGE[::-1])
    for i, page in enumerate(pages):
        client.write(i * 4096, page)
    assert client.read(0, 3 * 4096) == b"".join(pages)
    stats = store.stats()
    assert stats["huge_pages"] == 1                    # the random page, stored raw
    assert stats["compr_data_size"] - 4096 < 2 * 256   # the text pages compress well
    store.close()


def test_none_stores_raw():
    store = open_store("page", 4096, codec_for("none"))
    DirectClient(store).write(0, PAGE)
    assert store.stats()["compr_data_size"] == 4096
    store.close()


def test_canonical_names():
    assert codec_for("zstd:1").name == "zstd"
    assert codec_for("zstd:3").name == "zstd:3"


@pytest.mark.parametrize("name, message", [
    ("lzo", "valid ones are lz4, lz4hc, zstd, zstd:LEVEL, none"),
    ("zstd:0", "zstd:1 .. zstd:22"), ("zstd:23", "zstd:1 .. zstd:22"),
    ("zstd:x", "zstd:1 .. zstd:22"), ("LZ4", "unknown algorithm"), ("", "unknown algorithm"),
])
def test_unknown_names(name, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        codec_for(name)
