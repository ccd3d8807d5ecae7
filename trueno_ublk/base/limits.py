"""What a device may be: the ranges `create` and the config file both check.

Each range has one owner here (kernel limits come from native/ublk/ublk_abi.h);
the CLI and the config parser each phrase the error their own way, around
the same numbers.
"""
import dataclasses
import os

from trueno_ublk._native import lib
from trueno_ublk.base.units import PAGE_SIZE


@dataclasses.dataclass(frozen=True)
class Range:
    low: int
    high: int
    why: str = ""               # what the bound is, for the error message

    def __contains__(self, value: int) -> bool:
        return self.low <= value <= self.high

    def describe(self) -> str:
        return f"between {self.low} and {self.high}" + (f" ({self.why})" if self.why else "")


def queues() -> Range:
    return Range(1, os.cpu_count() or 1, "the CPU count")


# The page store numbers its chunks in 32 bits (native/page_store/page_store.h).
SIZE = Range(PAGE_SIZE, lib.PS_MAX_PAGES * PAGE_SIZE, "64 TiB")
DEPTH = Range(1, lib.UBLK_MAX_QUEUE_DEPTH, "the kernel's limit")
DEVICE_ID = Range(0, lib.UBLK_MAX_DEV_ID, "the kernel's device numbers")
HUGE_THRESHOLD = Range(1, PAGE_SIZE, "a page")
