"""Swap churn: allocate SIZE MiB of anonymous memory, write every page,
then read every page back and verify it, twice. Under memory pressure most
of it travels through swap, and the read passes churn it: once swap is half
full the kernel frees a slot when its page comes back, so pages go out again
to new slots while the old ones hold stale data until a discard.

The pages, alternately:
  - one repeated word (the page's own): a same-filled page for zram and us
  - 2 KiB of random bytes, then 2 KiB of one repeated text (compresses
    to about half)
Prints one line of figures; exit status 1 when a page came back wrong.
"""
import mmap
import os
import sys
import time

PAGE = 4096
HALF = PAGE // 2
RANDOM = os.urandom(HALF)
TEXT = (b"swap churn " * (HALF // 11 + 1))[:HALF]


def expected(i: int) -> bytes:
    stamp = i.to_bytes(8, "little")
    if i % 2 == 0:
        return stamp * (PAGE // 8)
    return stamp + RANDOM[8:] + TEXT


def main() -> None:
    size = int(sys.argv[1]) << 20
    pages = size // PAGE
    area = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    started = time.monotonic()
    for i in range(pages):
        area[i * PAGE:(i + 1) * PAGE] = expected(i)
    bad = 0
    for _ in range(2):
        for i in range(pages):
            if area[i * PAGE:(i + 1) * PAGE] != expected(i):
                bad += 1
    print(f"pages {pages} bad {bad} seconds {time.monotonic() - started:.1f}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
