"""A shared-memory arena for compressed pages, laid out like zsmalloc.

Everything the store holds lives in one memfd, so that memory is counted and
returned precisely (holes punched in empty chunks) and so that the arena can
outlive the process that filled it. Layout of the memfd:

    header   one page: ARENA_HEADER below
    entries  one u64 per device page: what the page holds (see Entry)
    fills    one u64 per device page: the word of a same-filled page
    chunks   CHUNK_SIZE each; a chunk serves one size class, its slots
             packed end to end (a slot may straddle a page boundary)

All three regions are sparse: a page of the map or a chunk costs memory
only once written. The allocator's bookkeeping (which slots are used) is
ordinary Python state derived from the entries.
"""
import mmap
import os
import struct
from array import array

from trueno_ublk._shim import ffi, lib
from trueno_ublk.units import PAGE_SIZE

CHUNK_SIZE = 64 << 10
CLASS_DELTA = 16                            # slot sizes are multiples of this
CLASS_COUNT = PAGE_SIZE // CLASS_DELTA      # class k holds payloads up to (k+1)*16 bytes

ARENA_MAGIC = b"TRUENOA1"
ARENA_HEADER = struct.Struct("<8sIIQQ")     # magic, version, chunk size, pages, chunks
ARENA_VERSION = 1


class Entry:
    """One map entry, a u64 published with a single aligned store.

    0                       empty: reads as zeros
    SAME                    same-filled: the word is in the fills array
    STORED | chunk | slot | length-1    a payload in a chunk's slot
    """
    SAME = 1 << 63
    STORED = 1 << 62
    CHUNK_SHIFT = 24
    SLOT_SHIFT = 12
    FIELD_MASK = (1 << 12) - 1

    @staticmethod
    def stored(chunk: int, slot: int, length: int) -> int:
        return Entry.STORED | chunk << Entry.CHUNK_SHIFT | slot << Entry.SLOT_SHIFT | (length - 1)

    @staticmethod
    def unpack(entry: int) -> tuple[int, int, int]:
        """(chunk, slot, length) of a STORED entry."""
        return ((entry & ~Entry.STORED) >> Entry.CHUNK_SHIFT,
                (entry >> Entry.SLOT_SHIFT) & Entry.FIELD_MASK,
                (entry & Entry.FIELD_MASK) + 1)


def size_class(length: int) -> int:
    return (length - 1) // CLASS_DELTA


def slot_size(cls: int) -> int:
    return (cls + 1) * CLASS_DELTA


SLOTS_PER_CHUNK = [CHUNK_SIZE // slot_size(c) for c in range(CLASS_COUNT)]


class MemoryLimitExceeded(MemoryError):
    """A write needed a new chunk beyond mem_limit."""


class ArenaFull(MemoryError):
    """Every reserved chunk is in use: fragmentation beyond the reservation."""


class Arena:
    """The memfd, its mapping, and the slot allocator over its chunks.

    Not thread-safe by itself: the store calls the allocator under its lock.
    """

    def __init__(self, pages: int, name: str = "trueno-ublk"):
        self.pages = pages
        map_bytes = _round_up(pages * 8, PAGE_SIZE)
        self.entries_offset = PAGE_SIZE
        self.fills_offset = self.entries_offset + map_bytes
        self.chunks_offset = _round_up(self.fills_offset + map_bytes, CHUNK_SIZE)
        # Room for every page stored raw, twice over for fragmentation, plus
        # one partly filled chunk per class. Unused room is only address space.
        self.max_chunks = 2 * _round_up(pages * PAGE_SIZE, CHUNK_SIZE) // CHUNK_SIZE + CLASS_COUNT
        self.length = self.chunks_offset + self.max_chunks * CHUNK_SIZE

        self.fd = os.memfd_create(name, os.MFD_CLOEXEC)
        os.ftruncate(self.fd, self.length)
        self.map = mmap.mmap(self.fd, self.length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.view = memoryview(self.map)
        self.entries = self.view[self.entries_offset:self.entries_offset + pages * 8].cast("Q")
        self.fills = self.view[self.fills_offset:self.fills_offset + pages * 8].cast("Q")
        ARENA_HEADER.pack_into(self.map, 0, ARENA_MAGIC, ARENA_VERSION, CHUNK_SIZE, pages,
                               self.max_chunks)

        self.mem_limit = 0
        self.chunk_class = array("h", [-1]) * self.max_chunks
        self.chunk_used = array("H", [0]) * self.max_chunks
        self.chunk_slots: list[bytearray | None] = [None] * self.max_chunks
        self.partial: list[set[int]] = [set() for _ in range(CLASS_COUNT)]
        self.free_chunks = array("I")
        self.chunk_high = 0                 # chunks below this have been handed out
        self.live_chunks = 0
        self.peak_live_chunks = 0
        self.slot_bytes = 0                 # bookkeeping: one byte per slot of live chunks

    def close(self) -> None:
        for v in (self.entries, self.fills, self.view):
            v.release()
        self.map.close()
        os.close(self.fd)

    # -- where things are ---------------------------------------------------

    def slot_offset(self, chunk: int, slot: int) -> int:
        return self.chunks_offset + chunk * CHUNK_SIZE + slot * slot_size(self.chunk_class[chunk])

    def resident_bytes(self) -> int:
        """Memory the memfd really holds (header, touched map pages, chunks)."""
        return os.fstat(self.fd).st_blocks * 512

    def metadata_bytes(self) -> int:
        """The allocator's own Python-side bookkeeping, roughly."""
        return self.slot_bytes + 8 * (self.chunk_high + len(self.free_chunks))

    # -- the allocator --------------------------------------------------------

    def alloc(self, length: int) -> tuple[int, int]:
        """A free slot for a payload of `length` bytes: (chunk, slot)."""
        cls = size_class(length)
        partial = self.partial[cls]
        chunk = next(iter(partial)) if partial else self._new_chunk(cls)
        return chunk, self.alloc_in(chunk)

    def has_room(self, chunk: int) -> bool:
        slots = self.chunk_slots[chunk]
        return slots is not None and self.chunk_used[chunk] < len(slots)

    def alloc_in(self, chunk: int) -> int:
        """A free slot in a given chunk that has room."""
        slots = self.chunk_slots[chunk]
        slot = slots.find(0)
        slots[slot] = 1
        used = self.chunk_used[chunk] + 1
        self.chunk_used[chunk] = used
        if used == len(slots):
            self.partial[self.chunk_class[chunk]].discard(chunk)
        return slot

    def free(self, chunk: int, slot: int) -> bool:
        """Free a slot; returns True when that emptied and released its chunk."""
        self.chunk_slots[chunk][slot] = 0
        used = self.chunk_used[chunk] - 1
        self.chunk_used[chunk] = used
        cls = self.chunk_class[chunk]
        if used:
            self.partial[cls].add(chunk)
            return False
        self.partial[cls].discard(chunk)
        self._release_chunk(chunk)
        return True

    def _new_chunk(self, cls: int) -> int:
        if self.mem_limit and (self.live_chunks + 1) * CHUNK_SIZE > self.mem_limit:
            raise MemoryLimitExceeded("mem_limit reached")
        if self.free_chunks:
            chunk = self.free_chunks.pop()
        elif self.chunk_high < self.max_chunks:
            chunk = self.chunk_high
            self.chunk_high += 1
        else:
            raise ArenaFull("arena full: run 'trueno-ublk compact'")
        self.chunk_class[chunk] = cls
        self.chunk_slots[chunk] = bytearray(SLOTS_PER_CHUNK[cls])
        self.slot_bytes += SLOTS_PER_CHUNK[cls]
        self.partial[cls].add(chunk)
        self.live_chunks += 1
        self.peak_live_chunks = max(self.peak_live_chunks, self.live_chunks)
        return chunk

    def punch_hole(self, offset: int, length: int) -> None:
        """Give memory back now. fallocate, not madvise(MADV_REMOVE): the
        latter refuses mlocked mappings, and the daemon's are all locked."""
        if lib.fallocate(self.fd, lib.FALLOC_FL_PUNCH_HOLE | lib.FALLOC_FL_KEEP_SIZE,
                         offset, length) != 0:
            raise OSError(ffi.errno, f"punching a hole in the arena: {os.strerror(ffi.errno)}")

    def _release_chunk(self, chunk: int) -> None:
        self.punch_hole(self.chunks_offset + chunk * CHUNK_SIZE, CHUNK_SIZE)
        self.slot_bytes -= len(self.chunk_slots[chunk])
        self.chunk_slots[chunk] = None
        self.chunk_class[chunk] = -1
        self.free_chunks.append(chunk)
        self.live_chunks -= 1

    def release_map_range(self, first_page: int, last_page: int) -> None:
        """Give back the map pages wholly inside [first_page, last_page)."""
        per_page = PAGE_SIZE // 8
        lo = _round_up(first_page, per_page)
        hi = last_page // per_page * per_page
        if hi > lo:
            for base in (self.entries_offset, self.fills_offset):
                self.punch_hole(base + lo * 8, (hi - lo) * 8)


def _round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to
