"""The cold-page policy of a store that compresses, as `create` options and
config keys give it: which idle pages are recompressed, with what codec,
and which pages are stored raw on their entropy alone. The mechanics are
C (native/page_store/page_store.h); here are the choices, their defaults and the
checks on them.

The defaults need no tuning; each was chosen by measurement on real files
(`scripts/bench tiers`' corpus: shared libraries, Python sources, gzip'd
files, a third each; natively, one page at a time):
- zstd level 6 for cold pages: their libraries and sources take 49.9 MiB
  where LZ4 took 71.1 and zstd level 3 51.6, compressing at 80 MiB/s;
  level 9 gains nothing over it on 4 KiB pages, level 19 1.6 MiB at a
  fourteenth of the speed. Reading a page back costs 7 us against LZ4's 1.6.
- two minutes idle before a page counts as cold.
- 7.5 bits of entropy a byte, estimated from the distinct byte values in
  a sample of 8 bytes in a row every 128 (the page store's codec): it sends 16,405 of
  the 16,554 pages LZ4 cannot compress straight to raw storage (those it
  leaves are mostly code that zstd may still shrink), and only 10 pages
  that LZ4 would have compressed. Shannon's formula over the same sample's
  histogram did as well at 7.0 bits (16,371 and 6) for several times the
  memory accesses, which the write path paid under emulation. Random
  bytes score about 8 bits.
"""
import dataclasses
import re

from trueno_ublk._native import lib
from trueno_ublk.base import limits
from trueno_ublk.base.codecs import codec_for

DEFAULT_RECOMPRESS_ALGORITHM = "zstd:6"
DEFAULT_RECOMPRESS_AFTER = 120              # seconds
DEFAULT_ENTROPY_THRESHOLD = 7.5             # bits a byte; 0: never route by entropy
# With a backing device: pages idle this long leave RAM for it (recompressed
# first, at recompress-after); incompressible pages leave at once.
DEFAULT_WRITEBACK_AFTER = 600               # seconds
# With a zram tier (create --zram-device): pages of fewer bits of entropy a
# byte than this go to kernel zram, the rest stay in the page store. 8: every
# page; below it, low-entropy pages (text, tables: cheap for the kernel's
# codec) go there, and the others, which zram would store as they are, here.
DEFAULT_ZRAM_ENTROPY = 8.0
RECOMPRESS_AFTER = limits.Range(0, 2**32 - 1, "0: never")
ENTROPY_BITS = (0.0, 8.0)
DURATION = re.compile(r"(\d+)\s*(s|m|h|d)?")
SECONDS = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
RECOMPRESS_TYPES = ("idle", "huge", "all")  # `recompress --type`: PS_RECOMPRESS_IDLE, ...
WRITEBACK_TYPES = ("idle", "huge", "incompressible", "all")    # `writeback --type`: PS_WRITEBACK_IDLE, ...


@dataclasses.dataclass(frozen=True)
class Policy:
    recompress_algorithm: str = DEFAULT_RECOMPRESS_ALGORITHM
    recompress_after: int = DEFAULT_RECOMPRESS_AFTER        # seconds idle; 0: never
    entropy_threshold: float = DEFAULT_ENTROPY_THRESHOLD    # bits a byte; 0: never
    writeback_after: int = DEFAULT_WRITEBACK_AFTER          # seconds idle; 0: never (backing device only)


def parse_duration(text: str, what: str) -> int:
    """Seconds from "300", "300s", "5m", "2h" or "1d"; ValueError otherwise."""
    m = DURATION.fullmatch(str(text).strip().lower())
    seconds = int(m.group(1)) * SECONDS[m.group(2)] if m else -1
    if seconds not in RECOMPRESS_AFTER:
        raise ValueError(f"{what} must be a duration like 300, 90s, 5m or 2h, at most "
                         f"{RECOMPRESS_AFTER.high} seconds (0: never), not '{text}'")
    return seconds


def parse_entropy(text: str | float, what: str = "entropy-threshold") -> float:
    """Bits a byte, 0 (never) to 8; ValueError otherwise."""
    try:
        bits = float(text)
    except (TypeError, ValueError):
        bits = -1.0
    if not ENTROPY_BITS[0] <= bits <= ENTROPY_BITS[1]:
        raise ValueError(f"{what} must be a number of bits a byte from 0 (never) to 8, not '{text}'")
    return bits


def recompress_type(kind: str) -> int:
    """PS_RECOMPRESS_* of a RECOMPRESS_TYPES name."""
    return getattr(lib, f"PS_RECOMPRESS_{kind.upper()}")


def writeback_type(kind: str) -> int:
    """PS_WRITEBACK_* of a WRITEBACK_TYPES name."""
    return getattr(lib, f"PS_WRITEBACK_{kind.upper()}")


def recompress_codec(name: str):
    """The codec `name` names, if it can recompress (ValueError otherwise)."""
    codec = codec_for(name)
    if codec.name == "none":
        raise ValueError("the recompression algorithm cannot be none: set recompress-after to 0 "
                         "to turn recompression off")
    return codec
