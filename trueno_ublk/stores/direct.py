"""Requests to a store without a kernel, served exactly as a queue thread
serves them: a queue server on a private tag buffer, fed request arrays
(struct ublk_request) like the ones the queue's ring hands over. The unit
tests and `scripts/bench store` drive stores through it, so they exercise
the production path: range checks, dispatch, counters and the store's ops.
"""
import errno
import mmap

from trueno_ublk._native import ffi, lib
from trueno_ublk.base.units import SECTOR_SIZE

OPS = {"read": lib.UBLK_IO_OP_READ, "write": lib.UBLK_IO_OP_WRITE,
       "discard": lib.UBLK_IO_OP_DISCARD, "write_zeroes": lib.UBLK_IO_OP_WRITE_ZEROES,
       "flush": lib.UBLK_IO_OP_FLUSH}


class StoreError(OSError):
    """A request the store answered with an error (its result, -errno)."""


class DirectClient:
    def __init__(self, store, depth: int = 64, buf_size: int = 128 << 10, helper: bool = False):
        self.depth, self.buf_size = depth, buf_size
        self.buffers = mmap.mmap(-1, depth * buf_size)
        self.counts = ffi.new("struct io_counters *")
        self.reqs = ffi.new("struct ublk_request[]", depth)
        self.server = store.queue_server(self.buffers, buf_size, self.counts, helper)

    def buffer(self, tag: int) -> memoryview:
        return memoryview(self.buffers)[tag * self.buf_size:(tag + 1) * self.buf_size]

    def serve(self, requests, swap: bool = False) -> list[int]:
        """Serve (op name, byte offset, byte length) requests as one batch;
        tag i's data is buffer(i). `swap`: flagged as the kernel's swap
        flags its writes. Returns each request's result."""
        for tag, (op, offset, length) in enumerate(requests):
            r = self.reqs[tag]
            r.tag, r.op, r.swap = tag, OPS.get(op, op), swap
            r.start_sector, r.nr_sectors = offset // SECTOR_SIZE, length // SECTOR_SIZE
        lib.queue_server_serve(self.server, self.reqs, len(requests))
        return [self.reqs[i].result for i in range(len(requests))]

    def _one(self, op, offset, length, swap: bool = False) -> int:
        result = self.serve([(op, offset, length)], swap)[0]
        if result < 0:
            raise StoreError(-result, f"{op} of {length} bytes at {offset}: {errno.errorcode[-result]}")
        return result

    def write(self, offset: int, data, swap: bool = False) -> None:
        self.buffer(0)[:len(data)] = data
        self._one("write", offset, len(data), swap)

    def read(self, offset: int, length: int) -> bytes:
        self._one("read", offset, length)
        return bytes(self.buffer(0)[:length])

    def discard(self, offset: int, length: int) -> None:
        self._one("discard", offset, length)

    def write_zeroes(self, offset: int, length: int) -> None:
        self._one("write_zeroes", offset, length)
