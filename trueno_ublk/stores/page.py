"""The page store: compressed pages in RAM, like kernel zram, kept in a
shared-memory arena.

The per-page mechanics -- same-fill detection, compression straight from
the request buffer into the arena, the zsmalloc-like slot allocator, the
page map -- are C (native/page_store/, served by native/stores/page.c).
This class opens the store with its policy (codec, huge threshold, the
cold-page policy of policy.py) and answers for it: memory limit,
compaction, idle marks, recompression and writeback by hand, its figures.

The arena is a memfd. The supervisor keeps it open, so that a new I/O
worker can attach to it after a crash and find every page again.
"""
import errno
import os

from trueno_ublk._native import ffi, lib
from trueno_ublk.base import limits, stats
from trueno_ublk.base.codecs import codec_for
from trueno_ublk.base.units import PAGE_SIZE, format_size
from trueno_ublk.stores import DEFAULT_HUGE_THRESHOLD
from trueno_ublk.stores.base import Store
from trueno_ublk.stores.policy import Policy, recompress_codec, recompress_type, writeback_type


def new_arena(size: int) -> int:
    """A memfd sized for a device of `size` bytes (sparse: costs nothing yet)."""
    fd = os.memfd_create("trueno-ublk-arena", 0)      # inherited by the I/O worker
    os.ftruncate(fd, lib.ps_arena_length(pages_for(size)))
    return fd


def pages_for(size: int) -> int:
    return (size + PAGE_SIZE - 1) // PAGE_SIZE


def check_arena(fd: int, size: int, algorithm: str) -> None:
    """ValueError unless the memfd `fd` holds a device of `size` bytes
    compressed with `algorithm`, checked without mapping it."""
    ret = lib.ps_arena_check(fd, pages_for(size), codec_for(algorithm).kind)
    if ret == -errno.EMEDIUMTYPE:
        raise ValueError(f"its pages are not compressed with {algorithm}: it was made with another --algorithm")
    if ret < 0:
        raise ValueError(f"its arena does not hold a device of its size ({size} bytes)")


# struct ps_stats' fields, which stats() gives by their C names.
PS_STATS = tuple(name for name, _ in ffi.typeof("struct ps_stats").fields)


class PageStore(Store):
    splits_batches = True

    def __init__(self, name: str, size: int, codec, huge_threshold: int = DEFAULT_HUGE_THRESHOLD,
                 arena_fd: int | None = None, attach: bool = False, policy: Policy | None = None):
        """A store over `arena_fd` (a new private arena when None); attach
        finds the pages a previous worker left in it instead of formatting."""
        super().__init__(name, size)
        if huge_threshold not in limits.HUGE_THRESHOLD:
            raise ValueError(f"huge threshold must be {limits.HUGE_THRESHOLD.describe()} bytes")
        self.codec = codec
        self.fd = new_arena(size) if arena_fd is None else arena_fd
        self._owns_fd = arena_fd is None
        err = ffi.new("int *")
        self.handle = lib.ps_open(self.fd, pages_for(size), codec.kind, codec.level,
                                  huge_threshold, int(attach), err)
        if self.handle == ffi.NULL:
            if self._owns_fd:
                os.close(self.fd)
            if err[0] == -errno.EUCLEAN:
                raise ValueError("the arena does not hold this device's pages")
            if err[0] == -errno.EMEDIUMTYPE:
                raise ValueError(f"the arena's pages are not compressed with {codec.name}: "
                                 "the device was made with another --algorithm")
            raise OSError(-err[0], f"opening the page store: {os.strerror(-err[0])}")
        self.size = lib.ps_pages(self.handle) * PAGE_SIZE     # attach: the arena's
        self.max_size = lib.ps_max_pages(self.handle) * PAGE_SIZE
        self._stats = ffi.new("struct ps_stats *")
        self.mem_used_max = 0
        self._zram_mm_stat = ""
        self.policy = policy or Policy()
        cold = recompress_codec(self.policy.recompress_algorithm)
        if lib.ps_set_recompression(self.handle, cold.kind, cold.level, self.policy.recompress_after) < 0:
            self.close()
            raise OSError(errno.ENOMEM, "no memory for the recompression codec")
        lib.ps_set_entropy_threshold(self.handle, self.policy.entropy_threshold)
        lib.ps_set_writeback_after(self.handle, self.policy.writeback_after)

    def close(self) -> None:
        super().close()
        lib.ps_close(self.handle)
        if self._owns_fd:
            os.close(self.fd)

    def set_mem_limit(self, limit: int) -> None:
        lib.ps_set_mem_limit(self.handle, limit)

    def reset_mem_used_max(self) -> None:
        lib.ps_reset_peak(self.handle)
        self.mem_used_max = 0

    def compact(self) -> int:
        return lib.ps_compact(self.handle)

    def mark_idle(self, age: int) -> int:
        return lib.ps_mark_idle(self.handle, age)

    def recompress(self, kind: str, algorithm: str | None, max_pages: int) -> tuple[int, int]:
        codec = recompress_codec(algorithm or self.policy.recompress_algorithm)
        done, saved = ffi.new("uint64_t *"), ffi.new("uint64_t *")
        ret = lib.ps_recompress(self.handle, recompress_type(kind), codec.kind, codec.level,
                                max_pages, done, saved)
        if ret < 0:
            raise OSError(-ret, f"recompressing: {os.strerror(-ret)}")
        return done[0], saved[0]

    def set_backing(self, fd: int, size: int) -> None:
        """Write pages back to `fd` (backing.open_backing's) of `size` bytes;
        a new worker (after a crash or a takeover) finds the pages the one
        before it left there."""
        ret = lib.ps_set_backing(self.handle, fd, size // PAGE_SIZE)
        if ret == -errno.EUCLEAN:
            raise ValueError("the page map names blocks past the backing device's end: "
                             "it is not the device these pages were written to")
        if ret < 0:
            raise OSError(-ret, f"setting the backing device: {os.strerror(-ret)}")

    def set_zram(self, fd: int, size: int, name: str, below_bits: float) -> None:
        """Put pages of less than `below_bits` bits of entropy a byte (8:
        all) in kernel zram device `name` (backing.open_zram's `fd`, `size`
        bytes) instead of RAM; a new worker finds the pages the one before
        it left there."""
        ret = lib.ps_set_zram(self.handle, fd, size // PAGE_SIZE, below_bits)
        if ret == -errno.EUCLEAN:
            raise ValueError(f"the page map has pages in zram past the end of {name}: "
                             "it is not the device these pages were written to")
        if ret < 0:
            raise OSError(-ret, f"setting the zram tier: {os.strerror(-ret)}")
        self._zram_mm_stat = f"/sys/block/{name}/mm_stat"

    def _zram_held(self) -> tuple[int, int]:
        """(compressed bytes, memory used) of the zram tier's device, from
        its mm_stat; (0, 0) without one."""
        if not self._zram_mm_stat:
            return 0, 0
        try:
            with open(self._zram_mm_stat) as f:
                fields = f.read().split()
            return int(fields[1]), int(fields[2])
        except (OSError, IndexError, ValueError):
            return 0, 0

    def writeback(self, kind: str, max_pages: int, age: int = 0) -> int:
        """Idle pages are those marked idle or unused for `age` seconds.
        OSError(EIO) when the device failed a write (those pages stayed in RAM)."""
        done = ffi.new("uint64_t *")
        ret = lib.ps_writeback(self.handle, writeback_type(kind), age, max_pages, done)
        if ret == -errno.ENODEV:
            raise ValueError("the device has no backing device (create --backing-dev)")
        if ret < 0:
            raise OSError(-ret, f"writing back after {done[0]} pages: {os.strerror(-ret)}")
        return done[0]

    def set_writeback_limit(self, pages: int | None) -> None:
        """zram's writeback_limit: None for none."""
        lib.ps_set_writeback_limit(self.handle, pages is not None, pages or 0)

    def _resize(self, size: int) -> None:
        ret = lib.ps_resize(self.handle, pages_for(size))
        if ret == -errno.EFBIG:
            raise ValueError(f"the arena has room for {format_size(self.max_size)} at most "
                             "(16 times the size the device was created with, up to 4 TiB)")
        if ret == -errno.EBUSY:
            self.refuse_dropping(size)
            raise ValueError("pages were stored past the new size")     # and discarded since
        if ret < 0:
            raise OSError(-ret, os.strerror(-ret))

    def pages_stored_from(self, offset: int) -> int:
        return lib.ps_pages_stored_from(self.handle, pages_for(offset))

    def stats(self) -> dict:
        """Its statistics (base/stats.py), from ps_stats' fields and the
        figures worked out here: memory used now and at its peak, and what
        the zram tier's device holds (its own mm_stat)."""
        st = self._stats
        lib.ps_get_stats(self.handle, st)
        figures = {name: getattr(st, name) for name in PS_STATS}
        figures["entropy_pages"] = list(st.entropy_pages)
        # As zram counts its own: the pool (chunks in use, the reserve), not
        # the page map and bookkeeping beside it (mem_map), as zram leaves
        # out its table.
        mem_used = st.pool_bytes
        # The C side notes its chunk peak as it happens; the rest of the
        # figure is taken as it is now.
        peak = mem_used + (st.peak_live_chunks - st.live_chunks) * lib.PS_CHUNK_SIZE
        self.mem_used_max = max(self.mem_used_max, mem_used, peak)
        zram_compr, zram_used = self._zram_held()
        figures.update(mem_used_total=mem_used, mem_used_max=self.mem_used_max,
                       zram_compr_data_size=zram_compr, zram_mem_used_total=zram_used)
        return stats.convert(figures, stats.STORE_SECTIONS)
