"""The interface every store offers the queue threads.

Offsets and lengths are in bytes and multiples of the 512-byte sector; a
request may start and end anywhere on that grid, not only on page bounds.
Several queue threads call one store at once, so stores are thread-safe.
"""
import errno
import logging

from trueno_ublk._shim import lib
from trueno_ublk.units import SECTOR_SIZE

log = logging.getLogger(__name__)

READ, WRITE, FLUSH, DISCARD, WRITE_ZEROES = (
    lib.UBLK_IO_OP_READ, lib.UBLK_IO_OP_WRITE, lib.UBLK_IO_OP_FLUSH,
    lib.UBLK_IO_OP_DISCARD, lib.UBLK_IO_OP_WRITE_ZEROES)


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
        """A function serving one batch of requests from shim_queue_run: it
        sets each request's result and counts it in `counts` (a cffi struct
        io_counters). `buffers` holds every tag's data, buf_size apart. This
        one calls the methods above from Python; a store with a native fast
        path returns its own."""
        view = memoryview(buffers)
        tags = [view[t:t + buf_size] for t in range(0, len(view), buf_size)]
        serve_one = self._serve_one

        def serve_batch(reqs, n):
            for i in range(n):
                r = reqs[i]
                offset, length = r.start_sector * SECTOR_SIZE, r.nr_sectors * SECTOR_SIZE
                if offset + length > dev_size:
                    counts.invalid_io += 1
                    r.result = -errno.EIO
                else:
                    r.result = serve_one(r.op, offset, length, tags[r.tag], counts)
        return serve_batch

    def _serve_one(self, op: int, offset: int, length: int, buf: memoryview, counts) -> int:
        """One request: bytes done, or -errno. Never raises: the daemon keeps
        serving whatever a client sends."""
        if (op == READ or op == WRITE) and length > len(buf):
            counts.invalid_io += 1
            return -errno.EIO
        try:
            if op == READ:
                counts.reads += 1
                self.read(offset, buf[:length])
                counts.read_bytes += length
                return length
            if op == WRITE:
                counts.writes += 1
                self.write(offset, buf[:length])
                counts.written_bytes += length
                return length
            if op == FLUSH:
                counts.flushes += 1
                self.flush()
                return 0
            if op == DISCARD or op == WRITE_ZEROES:
                counts.discards += 1
                (self.discard if op == DISCARD else self.write_zeroes)(offset, length)
                return 0
            counts.invalid_io += 1
            return -errno.EOPNOTSUPP
        except Exception:
            if op == READ:
                counts.failed_reads += 1
            else:
                counts.failed_writes += 1
            log.exception("%s store: op %d at %d+%d failed", self.name, op, offset, length)
            return -errno.EIO

    def flush(self) -> None:
        """Make written data durable: RAM holds nothing back, so nothing to do."""

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
