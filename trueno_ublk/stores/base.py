"""The interface every store offers the queue threads.

Offsets and lengths are in bytes and multiples of the 512-byte sector; a
request may start and end anywhere on that grid, not only on page bounds.
Several queue threads call one store at once, so stores are thread-safe.
"""
import os

from trueno_ublk._shim import ffi, lib


class Store:
    name = ""

    def read(self, offset: int, dest: memoryview) -> None:
        """Fill `dest` with the data at `offset` (never-written data reads as zeros)."""
        raise NotImplementedError

    def write(self, offset: int, src: memoryview) -> None:
        raise NotImplementedError

    def discard(self, offset: int, length: int) -> None:
        """Forget a range: it reads back as zeros and its memory is freed."""
        raise NotImplementedError

    def write_zeroes(self, offset: int, length: int) -> None:
        self.discard(offset, length)

    def batch_server(self, buffers, buf_size: int, dev_size: int, counts):
        """A C batch server (native/batch.c, a cffi pointer for
        lib.batch_serve and lib.batch_serve_queue): it sets each request's
        result and counts it in `counts` (a cffi struct io_counters).
        `buffers` holds every tag's data, buf_size apart. Freed by
        close_servers()."""
        raise NotImplementedError

    def _keep(self, server, buffers):
        if server == ffi.NULL:
            raise MemoryError(f"cannot start a batch server: {os.strerror(-self._err[0])}")
        self.__dict__.setdefault("_servers", []).append((server, buffers))
        return server

    def close_servers(self) -> None:
        """Free the batch servers (and join their helper threads): only once
        the queue threads using them have stopped."""
        for server, _ in self.__dict__.pop("_servers", []):
            lib.batch_server_free(server)

    def close(self) -> None:
        """Release what the store holds."""

    def stats(self) -> dict:
        """zram's mm_stat figures, where the store has them."""
        return {}

    def set_mem_limit(self, limit: int) -> None:
        raise ValueError(f"the {self.name} store holds no memory to limit")

    def reset_mem_used_max(self) -> None:
        raise ValueError(f"the {self.name} store holds no memory to measure")

    def compact(self) -> int:
        """Give back memory the allocator holds; returns 4 KiB pages freed."""
        return 0
