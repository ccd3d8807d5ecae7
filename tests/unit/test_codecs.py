import os

import pytest

from trueno_ublk.codecs import codec_for

PAGE = (b"some text that repeats " * 200)[:4096]


@pytest.mark.parametrize("name", ["lz4", "lz4hc", "zstd", "zstd:1", "zstd:19"])
def test_round_trip(name):
    codec = codec_for(name)
    for page in (PAGE, os.urandom(4096), bytes(4096)):
        payload = codec.compress(page)
        assert codec.decompress(payload, 4096) == page
    assert len(codec.compress(PAGE)) < 1024


def test_none_stores_raw():
    assert codec_for("none").compress(PAGE) is None


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
