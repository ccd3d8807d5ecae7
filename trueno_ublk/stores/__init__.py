"""Stores behind one interface (stores.base.Store), chosen by name at create."""
from trueno_ublk.stores.null import NullStore
from trueno_ublk.stores.ram import DEFAULT_HUGE_THRESHOLD, CompressedRamStore

STORES = {
    "ram": CompressedRamStore,
    "null": NullStore,
}


def make_store(name: str, size: int, codec, huge_threshold: int = DEFAULT_HUGE_THRESHOLD,
               arena_fd: int | None = None, attach: bool = False):
    if name == "ram":
        return CompressedRamStore(size, codec, huge_threshold, arena_fd, attach)
    if name == "null":
        return NullStore(size)
    raise ValueError(f"unknown store '{name}': valid ones are {', '.join(STORES)}")
