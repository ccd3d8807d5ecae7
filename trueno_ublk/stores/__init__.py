"""Stores behind one interface (stores.base.Store), chosen by name at create."""
from trueno_ublk.stores.null import NullStore
from trueno_ublk.stores.ram import CompressedRamStore

STORES = {
    "ram": CompressedRamStore,
    "null": NullStore,
}


def make_store(name: str, size: int, codec):
    try:
        cls = STORES[name]
    except KeyError:
        raise ValueError(f"unknown store '{name}': valid ones are {', '.join(STORES)}") from None
    return cls(size, codec)
