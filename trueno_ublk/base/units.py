"""Sizes as people write them (1G, 512M, 4096) and as zramctl prints them."""
import re

from trueno_ublk._native import lib

# Declared once, in the C headers: the block layer's sector, the store's page.
SECTOR_SIZE = 1 << lib.SECTOR_SHIFT
PAGE_SIZE = lib.PS_PAGE_SIZE

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes in `text`: a number with an optional binary suffix K/M/G/T/P
    (KiB and KB alike mean 1024). Raises ValueError with a one-line reason."""
    m = _SIZE_RE.match(str(text))
    if not m:
        raise ValueError(f"'{text}' is not a size (examples: 4096, 512M, 8G)")
    number, unit = m.groups()
    value = float(number) * _UNITS[unit.upper()]
    if value != int(value):
        raise ValueError(f"'{text}' is not a whole number of bytes")
    return int(value)


def format_size(n: int) -> str:
    """zramctl's style: 0B, 4K, 1.5G -- one decimal where it matters."""
    for unit in "PTGMK":
        scale = _UNITS[unit]
        if n >= scale:
            value = n / scale
            text = f"{value:.1f}".rstrip("0").rstrip(".")
            return f"{text}{unit}"
    return f"{n}B"
