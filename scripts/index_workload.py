"""A real program under swap, of another kind than the syntax trees: SQLite
(Python's sqlite3) builds a table of about MIB MiB of rows in an in-memory
database, then an index on its text keys, then walks the index. Its pages
are the process's own anonymous memory, so in a small memory cgroup most
of them live in swap while the index build sorts through them.

    index_workload.py MIB [--hold]
--hold: stop once the table and index are built, holding them.
The rows come from a seeded generator over the identifiers of the machine's
own standard library, so every run builds the same table. Prints one line:
rows, table bytes, checksum, seconds. Exit status 1 when the index walk
disagrees with what was inserted (a page came back wrong).
"""
import random
import re
import sqlite3
import sys
import sysconfig
import time
import zlib
from pathlib import Path

from hold import hold_if_asked

SEED = 32
ROWS_PER_BATCH = 10_000


def vocabulary() -> list[str]:
    """Identifiers of the standard library's top-level modules, sorted."""
    words = set()
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        words.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]{2,}", path.read_text(errors="replace")))
    return sorted(words)


def rows(limit: int, words: list[str]):
    """(key, value) batches of about `limit` bytes in all: a key of three
    identifiers and a number, a value of a dozen identifiers."""
    rng = random.Random(SEED)
    total = n = 0
    while total < limit:
        batch = []
        for _ in range(ROWS_PER_BATCH):
            key = ".".join(rng.choices(words, k=3)) + f":{n:08x}"
            value = " ".join(rng.choices(words, k=12))
            batch.append((key, value))
            total += len(key) + len(value)
            n += 1
        yield batch


def main() -> None:
    limit = int(sys.argv[1]) << 20
    started = time.monotonic()
    db = sqlite3.connect(":memory:")
    db.execute("PRAGMA cache_size = -4000000")          # KiB: no page ever evicted
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, key TEXT NOT NULL, value TEXT NOT NULL)")
    count = size = inserted = 0
    for batch in rows(limit, vocabulary()):
        db.executemany("INSERT INTO t (key, value) VALUES (?, ?)", batch)
        for key, value in batch:
            inserted ^= zlib.crc32(value.encode(), zlib.crc32(key.encode()))
            size += len(key) + len(value)
        count += len(batch)
    db.commit()
    db.execute("CREATE INDEX t_key ON t (key)")
    hold_if_asked()
    walked = seen = 0
    previous = ""
    ordered = True
    for key, value in db.execute("SELECT key, value FROM t INDEXED BY t_key ORDER BY key"):
        walked ^= zlib.crc32(value.encode(), zlib.crc32(key.encode()))
        ordered &= key >= previous
        previous = key
        seen += 1
    print(f"rows {count} bytes {size} checksum {walked:08x} seconds {time.monotonic() - started:.1f}")
    sys.exit(0 if (seen, walked, ordered) == (count, inserted, True) else 1)


if __name__ == "__main__":
    main()
