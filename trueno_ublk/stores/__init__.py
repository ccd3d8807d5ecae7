"""The stores, by name: what `create --store` offers.

A store is one C file in native/stores/ (its ops: how a request is served)
plus one entry here: what it is and what it needs. The entry names the
Python class that opens it for a device -- the base Store for a store with
no state of its own -- and is imported only when that store is used, so
the CLI's start-up pays for none of them.
"""
import dataclasses
import importlib

from trueno_ublk.base.units import PAGE_SIZE

# Pages that compress worse than this are stored raw (the page store's "huge").
# Measured on real files (scripts/bench tiers): 3K stored 6,200 more pages
# raw than kernel zram and held 4 MiB more of 192; from 7/8 of a page up the
# memory held stops falling, while every page kept compressed still costs a
# decompression on each read.
DEFAULT_HUGE_THRESHOLD = PAGE_SIZE * 7 // 8


@dataclasses.dataclass(frozen=True)
class StoreKind:
    description: str
    opener: str                 # "module:Class" that opens it for a device
    arena: bool = False         # keeps pages in the device's memfd, which outlives a worker
    codec: bool = False         # compresses: --algorithm and --huge-threshold apply
    holds_memory: bool = False  # --mem-limit, a backing device and the zram tier apply


STORES = {
    "page": StoreKind("compressed pages in RAM", "trueno_ublk.stores.page:PageStore",
                      arena=True, codec=True, holds_memory=True),
    "null": StoreKind("no data: measures the ublk transport alone", "trueno_ublk.stores.base:Store"),
}
DEFAULT_STORE = "page"
# Names a store had before, still taken wherever a name comes in: the CLI,
# config files, and the records and upgrades of a daemon that spelled it so.
OLD_NAMES = {"ram": "page"}


def store_name(name: str) -> str:
    """The store `name` names today (ValueError if none)."""
    name = OLD_NAMES.get(name, name)
    if name not in STORES:
        raise ValueError(f"unknown store '{name}': valid ones are {', '.join(STORES)}")
    return name


def opener_module(name: str):
    """The module of the class that opens store `name`: a store with an
    arena answers new_arena() and check_arena() there too."""
    return importlib.import_module(STORES[name].opener.partition(":")[0])


def new_arena(name: str, size: int) -> int | None:
    """The arena of a new device of `size` bytes served by store `name`:
    a memfd (which the supervisor keeps, so that a new worker finds every
    page), or None for a store that keeps none."""
    if not STORES[name].arena:
        return None
    return opener_module(name).new_arena(size)


def check_arena(name: str, arena_fd: int | None, size: int, algorithm: str) -> None:
    """ValueError unless `arena_fd` holds the pages of a device of `size`
    bytes served by store `name` with `algorithm`: what a takeover checks
    before it touches anything."""
    if not STORES[name].arena:
        return
    if arena_fd is None:
        raise ValueError("no arena was kept: its pages are gone")
    opener_module(name).check_arena(arena_fd, size, algorithm)


def open_store(name: str, size: int, codec=None, huge_threshold: int = DEFAULT_HUGE_THRESHOLD,
               arena_fd: int | None = None, attach: bool = False, policy=None):
    """Open the store called `name` for a device of `size` bytes. A store
    with an arena works in `arena_fd` (attach: find the pages a previous
    worker left there), a compressing one with `codec` and the cold-page
    `policy` (policy.Policy; None: its defaults)."""
    name = store_name(name)
    kind = STORES[name]
    opener = getattr(opener_module(name), kind.opener.partition(":")[2])
    options = {}
    if kind.codec:
        options.update(codec=codec, huge_threshold=huge_threshold, policy=policy)
    if kind.arena:
        options.update(arena_fd=arena_fd, attach=attach)
    return opener(name, size, **options)
