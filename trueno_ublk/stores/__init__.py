"""The stores, by name: what `create --store` offers. The registry names
them without importing them, so that the CLI's start-up does not pay for
a store it will not run; make_store imports the one asked for."""
from trueno_ublk.units import PAGE_SIZE

STORES = {
    "ram": "compressed pages in RAM",
    "null": "no data: measures the ublk transport alone",
}
# Pages that compress worse than this are stored raw (the ram store's "huge").
DEFAULT_HUGE_THRESHOLD = PAGE_SIZE * 3 // 4


def make_store(name: str, size: int, codec, huge_threshold: int = DEFAULT_HUGE_THRESHOLD,
               arena_fd: int | None = None, attach: bool = False):
    if name == "ram":
        from trueno_ublk.stores.ram import CompressedRamStore
        return CompressedRamStore(size, codec, huge_threshold, arena_fd, attach)
    if name == "null":
        from trueno_ublk.stores.null import NullStore
        return NullStore(size)
    raise ValueError(f"unknown store '{name}': valid ones are {', '.join(STORES)}")
