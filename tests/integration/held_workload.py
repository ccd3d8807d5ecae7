"""A program whose memory lives in swap while its swap device's daemon is
restarted or killed: write SIZE MiB of anonymous pages (swap_workload's
pages), say "written", then read every page back and check it, pass after
pass, saying "pass N bad B" after each, until a line arrives on stdin.
Exit status 1 when a page ever came back wrong."""
import mmap
import select
import sys

from swap_workload import PAGE, expected


def main() -> None:
    pages = (int(sys.argv[1]) << 20) // PAGE
    area = mmap.mmap(-1, pages * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for i in range(pages):
        area[i * PAGE:(i + 1) * PAGE] = expected(i)
    print("written", flush=True)
    bad = passes = 0
    while not select.select([sys.stdin], [], [], 0)[0]:
        bad += sum(area[i * PAGE:(i + 1) * PAGE] != expected(i) for i in range(pages))
        passes += 1
        print(f"pass {passes} bad {bad}", flush=True)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
