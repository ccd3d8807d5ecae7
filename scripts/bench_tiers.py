"""scripts/bench tiers: memory held on real data, beside kernel zram's.

The corpus is real files found on this machine, not generated patterns:
shared libraries, Python sources and already-compressed files (gzip'd
documentation and man pages), a third each, taken in path order so that
the same machine gives the same corpus. It is written with O_DIRECT to kernel zram (lz4, zstd) and to
trueno-ublk (lz4, zstd) in one boot; each device's memory held, its pages
stored raw (huge) and the write and read times are reported, ratios to
kernel zram of the same codec. Needs root, ublk_drv and zram.
"""
import argparse
import glob
import json
import os
import shutil
import time
from pathlib import Path

import psutil

from benchlib import TOP, MiB, Trueno, Zram, sh

# (kind, glob patterns): each kind fills a third of the corpus.
KINDS = {
    "shared libraries": ["/usr/lib/x86_64-linux-gnu/*.so*"],
    "python sources": ["/usr/lib/python3*/**/*.py", "/usr/local/lib/python3*/**/*.py",
                       "/root/.pyenv/versions/*/lib/python3*/**/*.py"],
    "compressed files": ["/usr/share/doc/**/*.gz", "/usr/share/man/**/*.gz"],
}
# Built natively before a guest boots (reading thousands of small files
# over the guest's 9p share is slow under emulation), where the guest sees
# it; the guest copies it to its own /tmp before writing it anywhere.
BUILT = TOP / "bench-results" / "scratch"
CORPUS = Path("/tmp/trueno-corpus")


def build_corpus(mib: int, path: Path) -> dict[str, int]:
    """Write the corpus to `path`, `mib` MiB; returns bytes taken per kind."""
    quota = mib * MiB // len(KINDS)
    taken = {}
    with path.open("wb") as out:
        for kind, patterns in KINDS.items():
            paths = sorted({p for pattern in patterns for p in glob.glob(pattern, recursive=True)
                            if os.path.isfile(p) and not os.path.islink(p)})
            done = 0
            for found in paths:
                if done >= quota:
                    break
                try:
                    data = Path(found).read_bytes()[:quota - done]
                except OSError:
                    continue
                out.write(data)
                done += len(data)
            taken[kind] = done
        out.truncate(out.tell() // 4096 * 4096)     # whole pages, for O_DIRECT
    return taken


def timed(cmd: str) -> float:
    start = time.monotonic()
    sh(cmd)
    return time.monotonic() - start


def write_and_read(dev: str) -> tuple[float, float]:
    size = CORPUS.stat().st_size
    write = timed(f"dd if={CORPUS} of={dev} bs=1M oflag=direct status=none")
    read = timed(f"dd if={dev} of=/dev/null bs=1M iflag=direct count={size // MiB} status=none")
    return write, read


def measure_zram(size: str, algorithm: str) -> dict:
    zram = Zram(size, algorithm)
    try:
        write, read = write_and_read(zram.path)
        mm = zram.mm_stat()
        return {"held": mm[2], "compr": mm[1], "huge": mm[7], "same": mm[5], "write": write, "read": read}
    finally:
        zram.close()


def measure_trueno(size: str, options: str) -> dict:
    dev = Trueno(size, options)
    try:
        worker = psutil.Process(dev.worker_pid())
        time.sleep(1)
        empty = worker.memory_info().rss
        write, read = write_and_read(dev.path)
        st = dev.stat()
        return {"held": st["mem_used_total"], "compr": st["compr_data_size"], "huge": st["huge_pages"],
                "same": st["same_pages"], "write": write, "read": read,
                "rss_growth": worker.memory_info().rss - empty,
                "reserve": st["mem_reserve"], "map": st["mem_map"]}
    finally:
        dev.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=int, default=192, metavar="MIB", help="corpus size in MiB")
    ap.add_argument("--huge-thresholds", metavar="LIST", default="",
                    help="also trueno lz4 with each of these --huge-threshold values (bytes, comma-separated)")
    ap.add_argument("--build-corpus", action="store_true", help="only build the corpus (natively)")
    args = ap.parse_args()
    built = BUILT / f"corpus-{args.corpus}M"
    if args.build_corpus or not built.exists():
        BUILT.mkdir(parents=True, exist_ok=True)
        taken = build_corpus(args.corpus, built)
        (BUILT / f"corpus-{args.corpus}M.json").write_text(json.dumps(taken))
        if args.build_corpus:
            return
    taken = json.loads((BUILT / f"corpus-{args.corpus}M.json").read_text())
    shutil.copyfile(built, CORPUS)
    size = f"{args.corpus + 64}M"
    rows = {"zram lz4": measure_zram(size, "lz4"), "zram zstd": measure_zram(size, "zstd"),
            "trueno lz4": measure_trueno(size, "--algorithm lz4"),
            "trueno zstd": measure_trueno(size, "--algorithm zstd")}
    for threshold in filter(None, args.huge_thresholds.split(",")):
        rows[f"trueno lz4 huge>{threshold}"] = measure_trueno(size, f"--algorithm lz4 --huge-threshold {threshold}")
    CORPUS.unlink()

    print(f"tiers benchmark: kernel {sh('uname -r').strip()}, corpus of real files, "
          + ", ".join(f"{kind} {n / MiB:.1f} MiB" for kind, n in taken.items()))
    print("memory held: mem_used_total (ours: the arena, reserve and page map included); "
          "x zram: against kernel zram of the same codec, same boot")
    width = max(map(len, rows)) + 2
    print(f"{'target':<{width}}{'held MiB':>9}{'x zram':>8}{'compr MiB':>10}{'huge':>8}{'same':>7}"
          f"{'write x':>9}{'read x':>8}")
    for name, r in rows.items():
        base = rows["zram " + name.split()[1]]
        print(f"{name:<{width}}{r['held'] / MiB:>9.1f}{r['held'] / base['held']:>8.2f}{r['compr'] / MiB:>10.1f}"
              f"{r['huge']:>8}{r['same']:>7}{base['write'] / r['write']:>9.2f}{base['read'] / r['read']:>8.2f}")
    for name, r in rows.items():
        if "rss_growth" in r:
            print(f"{name}: daemon RSS growth {r['rss_growth'] / MiB:.1f} MiB; of the memory held, "
                  f"reserve {r['reserve'] / MiB:.1f} MiB, page map {r['map'] / MiB:.1f} MiB")


if __name__ == "__main__":
    main()
