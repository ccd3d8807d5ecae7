"""The workloads' --hold (program_workload.py, index_workload.py): bench
tiers reads a program's memory while it holds what it built."""
import sys


def hold_if_asked() -> None:
    """With --hold: say so, and keep what was built until standard input
    closes; then exit."""
    if "--hold" in sys.argv:
        print("holding", flush=True)
        sys.stdin.read()
        sys.exit(0)
