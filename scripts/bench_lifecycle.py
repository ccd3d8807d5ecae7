"""scripts/bench lifecycle: how long `create` and `delete` take a user.

Times the real commands, each a fresh process as a user runs it: `--help`
(the interpreter and the CLI's own imports, nothing else), `create` until
it prints the live device, `delete` until the device is gone. Median of
--runs, with the fastest and slowest. In the guest, under emulation, the
absolute figures are far above a real machine's; they compare only with
figures from the same boot.
"""
import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

CLI = str(Path(sys.executable).with_name("trueno-ublk"))


def timed(*args: str) -> tuple[float, str]:
    started = time.monotonic()
    out = subprocess.run([CLI, *args], check=True, capture_output=True, text=True).stdout
    return time.monotonic() - started, out.strip()


def row(name: str, seconds: list[float]) -> str:
    return (f"{name:<28} {statistics.median(seconds) * 1000:10.0f} "
            f"{min(seconds) * 1000:10.0f} {max(seconds) * 1000:10.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--size", default="8G")
    args = ap.parse_args()
    where = "guest (emulated)" if os.environ.get("TRUENO_UBLK_GUEST") else "native"
    help_s, create_s, delete_s = [], [], []
    for _ in range(args.runs):
        help_s.append(timed("--help")[0])
        seconds, dev = timed("create", "--size", args.size)
        create_s.append(seconds)
        delete_s.append(timed("delete", dev)[0])
    print(f"lifecycle benchmark: kernel {platform.release()}, {where}, "
          f"create --size {args.size}, median of {args.runs}")
    print(f"{'command':<28} {'median ms':>10} {'min ms':>10} {'max ms':>10}")
    print(row("trueno-ublk --help", help_s))
    print(row(f"create --size {args.size}", create_s))
    print(row("delete", delete_s))
    print(row("lifecycle (create + delete)", [c + d for c, d in zip(create_s, delete_s, strict=True)]))


if __name__ == "__main__":
    main()
