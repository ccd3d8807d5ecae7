"""Compression algorithms by name, as `create --algorithm` takes them.

The codecs themselves (liblz4, libzstd) run inside the C page store, which
compresses straight from the request buffer into the arena and back; here
is only the choice of one, by name.
"""
import dataclasses

from trueno_ublk._native import lib

ZSTD_DEFAULT_LEVEL = 1
ALGORITHMS = ("lz4", "lz4hc", "zstd", "zstd:LEVEL", "none")


@dataclasses.dataclass(frozen=True)
class Codec:
    name: str
    kind: int               # PS_CODEC_* of native/page_store/page_store.h
    level: int = 0


def codec_for(name: str) -> Codec:
    """The codec called `name`; ValueError listing the valid names otherwise."""
    if name == "lz4":
        return Codec(name, lib.PS_CODEC_LZ4)
    if name == "lz4hc":
        return Codec(name, lib.PS_CODEC_LZ4HC)
    if name == "none":
        return Codec(name, lib.PS_CODEC_NONE)
    if name == "zstd":
        return Codec(name, lib.PS_CODEC_ZSTD, ZSTD_DEFAULT_LEVEL)
    if name.startswith("zstd:"):
        level, top = name[5:], lib.ps_zstd_max_level()
        if level.isdigit() and 1 <= int(level) <= top:
            level = int(level)
            return Codec("zstd" if level == ZSTD_DEFAULT_LEVEL else f"zstd:{level}",
                         lib.PS_CODEC_ZSTD, level)
        raise ValueError(f"unknown zstd level '{level}': use zstd:1 .. zstd:{top}")
    raise ValueError(f"unknown algorithm '{name}': valid ones are {', '.join(ALGORITHMS)}")
