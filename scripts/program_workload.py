"""A real program under swap: Python parses MIB MiB of the machine's own
Python sources into syntax trees, keeps them all, then walks every tree
twice. The trees take several times the sources' size, so in a small memory
cgroup most of them live in swap while the walks fault them back.

    program_workload.py MIB [--hold]
--hold: stop once the trees are built, holding them (hold_if_asked()).
Prints one line: files, source bytes, nodes, seconds. Exit status 1 when
the two walks disagree (a page came back wrong).
"""
import ast
import sys
import sysconfig
import time
from pathlib import Path

from hold import hold_if_asked


def sources(limit: int) -> list[Path]:
    """The standard library's .py files, in a fixed order, up to `limit` bytes."""
    chosen, total = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        size = path.stat().st_size
        if total + size > limit:
            break
        chosen.append(path)
        total += size
    return chosen


def walk(trees: list) -> tuple[int, int]:
    """Nodes in all trees, and a checksum of their types and positions."""
    nodes = checksum = 0
    for tree in trees:
        for node in ast.walk(tree):
            nodes += 1
            checksum = (checksum * 31 + hash(type(node).__name__) + getattr(node, "lineno", 0)) % (1 << 61)
    return nodes, checksum


def main() -> None:
    paths = sources(int(sys.argv[1]) << 20)
    started = time.monotonic()
    trees, size = [], 0
    for path in paths:
        text = path.read_bytes()
        size += len(text)
        try:
            trees.append(ast.parse(text, str(path)))
        except (SyntaxError, ValueError):     # test data that is not meant to parse
            pass
    hold_if_asked()
    first = walk(trees)
    second = walk(trees)
    print(f"files {len(trees)} bytes {size} nodes {first[0]} seconds {time.monotonic() - started:.1f}")
    sys.exit(0 if first == second else 1)


if __name__ == "__main__":
    main()
