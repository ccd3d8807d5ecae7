"""Allocate SIZE MiB of anonymous memory, fill every page with a known
pattern, touch every page again, then verify every page. Under memory
pressure most of it travels through swap. Prints one line of figures."""
import mmap
import os
import sys
import time

PAGE = 4096


def main() -> None:
    size = int(sys.argv[1]) << 20
    # Compressible like typical anonymous memory: 512 varied bytes, then zeros.
    template = bytearray(os.urandom(512) + bytes(PAGE - 512))
    pages = size // PAGE
    area = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    started = time.monotonic()
    for i in range(pages):
        off = i * PAGE
        area[off:off + PAGE] = template
        area[off:off + 8] = i.to_bytes(8, "little")
    for i in range(pages):                  # touch again: every page comes back once
        off = i * PAGE + 8
        area[off:off + 8] = (i ^ 0x5A5A).to_bytes(8, "little")
    bad = 0
    for i in range(pages):
        off = i * PAGE
        page = area[off:off + PAGE]
        if (page[:8] != i.to_bytes(8, "little") or page[8:16] != (i ^ 0x5A5A).to_bytes(8, "little")
                or page[16:] != template[16:]):
            bad += 1
    print(f"pages {pages} bad {bad} seconds {time.monotonic() - started:.1f}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
