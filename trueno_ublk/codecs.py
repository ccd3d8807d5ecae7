"""Compression algorithms by name, as `create --algorithm` takes them.

A codec turns one page into a compressed payload and back. The python-lz4
and zstandard calls release the GIL, so queue threads compress in parallel.
"""
import threading

import lz4.block
import zstandard

ZSTD_DEFAULT_LEVEL = 1


class Codec:
    name: str

    def compress(self, page) -> bytes | None:
        """The compressed payload, or None for "store raw"."""
        raise NotImplementedError

    def decompress(self, payload: bytes, size: int) -> bytes:
        raise NotImplementedError


class Lz4(Codec):
    def __init__(self, high_compression: bool = False):
        self.name = "lz4hc" if high_compression else "lz4"
        self._mode = "high_compression" if high_compression else "default"

    def compress(self, page):
        return lz4.block.compress(page, mode=self._mode, store_size=False)

    def decompress(self, payload, size):
        return lz4.block.decompress(payload, uncompressed_size=size)


class Zstd(Codec):
    # zstandard's (de)compressor objects are not thread-safe: one per thread.
    def __init__(self, level: int):
        self.name = f"zstd:{level}" if level != ZSTD_DEFAULT_LEVEL else "zstd"
        self._level = level
        self._local = threading.local()

    def _pair(self):
        local = self._local
        if not hasattr(local, "c"):
            local.c = zstandard.ZstdCompressor(level=self._level, write_content_size=False,
                                               write_checksum=False, write_dict_id=False)
            local.d = zstandard.ZstdDecompressor()
        return local

    def compress(self, page):
        return self._pair().c.compress(page)

    def decompress(self, payload, size):
        return self._pair().d.decompress(payload, max_output_size=size)


class Uncompressed(Codec):
    name = "none"

    def compress(self, page):
        return None

    def decompress(self, payload, size):
        raise AssertionError("raw pages are never decompressed")


ALGORITHMS = ("lz4", "lz4hc", "zstd", "zstd:LEVEL", "none")


def codec_for(name: str) -> Codec:
    """The codec called `name`; ValueError listing the valid names otherwise."""
    valid = ", ".join(ALGORITHMS)
    zmax = zstandard.MAX_COMPRESSION_LEVEL
    if name == "lz4":
        return Lz4()
    if name == "lz4hc":
        return Lz4(high_compression=True)
    if name == "none":
        return Uncompressed()
    if name == "zstd":
        return Zstd(ZSTD_DEFAULT_LEVEL)
    if name.startswith("zstd:"):
        level = name[5:]
        if level.isdigit() and 1 <= int(level) <= zmax:
            return Zstd(int(level))
        raise ValueError(f"unknown zstd level '{level}': use zstd:1 .. zstd:{zmax}")
    raise ValueError(f"unknown algorithm '{name}': valid ones are {valid}")
