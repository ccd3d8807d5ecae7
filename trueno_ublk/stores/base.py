"""The interface every store offers the queue threads.

Offsets and lengths are in bytes and multiples of the 512-byte sector; a
request may start and end anywhere on that grid, not only on page bounds.
Several queue threads call one store at once, so stores are thread-safe.
"""


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

    def flush(self) -> None:
        """Make written data durable: RAM holds nothing back, so nothing to do."""

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
