"""Compressed pages in RAM, like kernel zram, kept in a shared-memory arena.

The per-page mechanics -- same-fill detection, compression straight from
the request buffer into the arena, the zsmalloc-like slot allocator, the
page map -- are C (native/page_store.c), called once per batch of requests
with the GIL released. This class holds the policy and speaks the Store
interface: codec, huge threshold, memory limit, zram's statistics.

The arena is a memfd. A supervisor process keeps it open, so that a new
daemon can attach to it after a crash and find every page again.
"""
import errno
import os
import threading

from trueno_ublk._shim import ffi, lib
from trueno_ublk.stores import DEFAULT_HUGE_THRESHOLD
from trueno_ublk.stores.base import Store
from trueno_ublk.units import PAGE_SIZE


class MemoryLimitExceeded(MemoryError):
    """A write needed memory beyond mem_limit."""


def new_arena(size: int) -> int:
    """A memfd sized for a device of `size` bytes (sparse: costs nothing yet)."""
    fd = os.memfd_create("trueno-ublk-arena", 0)      # inherited by the I/O worker
    os.ftruncate(fd, lib.ps_arena_length(pages_for(size)))
    return fd


def pages_for(size: int) -> int:
    return (size + PAGE_SIZE - 1) // PAGE_SIZE


class CompressedRamStore(Store):
    name = "ram"

    def __init__(self, size: int, codec, huge_threshold: int = DEFAULT_HUGE_THRESHOLD,
                 arena_fd: int | None = None, attach: bool = False):
        """A store over `arena_fd` (a new private arena when None); attach
        finds the pages a previous daemon left in it instead of formatting."""
        if not 0 < huge_threshold <= PAGE_SIZE:
            raise ValueError(f"huge threshold must be between 1 and {PAGE_SIZE} bytes")
        self.size = size
        self.codec = codec
        self.fd = new_arena(size) if arena_fd is None else arena_fd
        self._owns_fd = arena_fd is None
        err = ffi.new("int *")
        self._ps = lib.ps_open(self.fd, pages_for(size), codec.kind, codec.level,
                               huge_threshold, int(attach), err)
        if self._ps == ffi.NULL:
            if err[0] == -errno.EUCLEAN:
                raise ValueError("the arena does not hold this device's pages")
            raise OSError(-err[0], f"opening the page store: {os.strerror(-err[0])}")
        self._local = threading.local()
        self._workers = []
        self._workers_lock = threading.Lock()
        self._stats = ffi.new("struct ps_stats *")
        self._err = ffi.new("int *")
        self.mem_used_max = 0

    def close(self) -> None:
        self.close_servers()
        for w in self._workers:
            lib.ps_worker_free(w)
        self._workers.clear()
        lib.ps_close(self._ps)
        if self._owns_fd:
            os.close(self.fd)

    def new_worker(self):
        """Codec state and scratch for one thread, made before it serves I/O."""
        w = lib.ps_worker_new(self._ps)
        if w == ffi.NULL:
            raise MemoryError("no memory for a page store worker")
        with self._workers_lock:
            self._workers.append(w)
        return w

    def _worker(self):
        try:
            return self._local.worker
        except AttributeError:
            self._local.worker = self.new_worker()
            return self._local.worker

    @staticmethod
    def _check(ret: int) -> None:
        if ret == -errno.ENOSPC:
            raise MemoryLimitExceeded("mem_limit reached")
        if ret == -errno.ENOMEM:
            raise MemoryError("arena full: run 'trueno-ublk compact'")
        if ret:
            raise OSError(-ret, os.strerror(-ret))

    # -- the Store interface --------------------------------------------------

    def read(self, offset, dest):
        self._check(lib.ps_read(self._worker(), offset, len(dest), ffi.from_buffer(dest)))

    def write(self, offset, src):
        self._check(lib.ps_write(self._worker(), offset, len(src), ffi.from_buffer(src)))

    def discard(self, offset, length):
        self._check(lib.ps_discard(self._worker(), offset, length))

    def batch_server(self, buffers, buf_size: int, dev_size: int, counts):
        # A helper thread pays off only with a second CPU to run it.
        helper = (os.cpu_count() or 1) > 1
        return self._keep(lib.batch_server_for_page_store(
            self._ps, ffi.from_buffer(buffers), buf_size, dev_size, counts, int(helper),
            self._err), buffers)

    def set_mem_limit(self, limit: int) -> None:
        lib.ps_set_mem_limit(self._ps, limit)

    def reset_mem_used_max(self) -> None:
        lib.ps_reset_peak(self._ps)
        self.mem_used_max = 0

    def compact(self) -> int:
        return lib.ps_compact(self._ps)

    def stats(self) -> dict:
        st = self._stats
        lib.ps_get_stats(self._ps, st)
        # What the memfd holds (maps, chunks in use, the reserve), plus bookkeeping.
        mem_used = st.arena_bytes + st.metadata_bytes
        # The C side notes its chunk peak as it happens; the rest of the
        # figure is taken as it is now.
        peak = mem_used + (st.peak_live_chunks - st.live_chunks) * lib.PS_CHUNK_SIZE
        self.mem_used_max = max(self.mem_used_max, mem_used, peak)
        return {
            "orig_data_size": st.pages_stored * PAGE_SIZE,
            "compr_data_size": st.compr_data_size,
            "mem_used_total": mem_used,
            "mem_limit": st.mem_limit,
            "mem_used_max": self.mem_used_max,
            "mem_reserve": st.reserve_chunks * lib.PS_CHUNK_SIZE,
            "same_pages": st.same_pages,
            "pages_compacted": st.pages_compacted,
            "huge_pages": st.huge_pages,
            "pages_stored": st.pages_stored,
            "notify_free": st.notify_free,
        }
