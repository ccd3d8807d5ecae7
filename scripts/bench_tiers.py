"""scripts/bench tiers: memory held on real data, beside kernel zram's.

Two corpora of real data, not generated patterns (--data, repeatable;
default both, each its own table):
- files: files found on this machine -- shared libraries, Python sources
  and already-compressed files (gzip'd documentation and man pages), a
  third each, taken in path order so that the same machine gives the same
  corpus;
- programs: what swap carries, real programs' anonymous memory -- CPython
  holding syntax trees of the standard library (program_workload.py), and
  an in-memory SQLite table with its index (index_workload.py), half each:
  each program is run until it has built its working set (--hold), then
  its private writable anonymous mappings are read through /proc/PID/mem,
  in address order, all-zero pages left out.
Each is written with O_DIRECT to
kernel zram (lz4, zstd, and zstd with a dictionary trained on the corpus as
our store trains its own, where the kernel takes one: algorithm_params) and
to trueno-ublk (lz4, zstd) in one boot, then
left idle for the cold-page policy to act (its defaults, but for how long
pages wait: --recompress-after). Reported for each device: memory held hot
and cold, pages stored raw (huge) and recompressed, write and read times
(ratios to kernel zram of the same codec), random 4K read latency of the
cold pages and the CPU time spent in the background. Needs root, ublk_drv
and zram.

Given an empty disk ($TRUENO_UBLK_DISK: scripts/bench gives the guest
one), two more rows write the corpus with the disk as backing device: kernel
zram lz4 with its own writeback as its users ask for it (`huge` at once,
then `idle` once the corpus has been left idle as long), and trueno-ublk
lz4 with its default policy (writeback-after as long). Reported: RAM held
hot and cold, the pages on the disk and the room they take there (zram's:
a block each; ours: a compressed page's payload, packed), and reads that
now hit the disk.

Two shorter parts run alone (--only):
- zram-tier: trueno-ublk lz4 with its pages in kernel zram (--zram-device)
  and split by entropy (--zram-entropy 6) beside its own store and kernel
  zram lz4, just written: RAM held (ours and the zram device's together),
  write and read times, random 4K read latency.
- mem-limit: the corpus written page by page through a memory limit of half
  what kernel zram lz4 holds for it: kernel zram lz4 with that mem_limit,
  trueno-ublk lz4 with that --mem-limit and the disk as backing device.
  Reported: writes failed, peak RAM, pages on the disk, whether every page
  written reads back as written.
"""
import argparse
import glob
import json
import mmap
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import zstandard

from trueno_ublk.stores.policy import DEFAULT_RECOMPRESS_AFTER

from benchlib import TOP, MiB, Trueno, Zram, fio, sh

# (kind, glob patterns): each kind fills a third of the corpus.
KINDS = {
    "shared libraries": ["/usr/lib/x86_64-linux-gnu/*.so*"],
    "python sources": ["/usr/lib/python3*/**/*.py", "/usr/local/lib/python3*/**/*.py",
                       "/root/.pyenv/versions/*/lib/python3*/**/*.py"],
    "compressed files": ["/usr/share/doc/**/*.gz", "/usr/share/man/**/*.gz"],
}
# The programs of the programs corpus: script, and its size argument as a
# share of the corpus (each must hold more than its half of it).
PROGRAMS = {
    "syntax trees (CPython)": ("program_workload.py", 1 / 24),
    "SQLite table and index": ("index_workload.py", 1 / 2),
}
# Built natively before a guest boots (reading thousands of small files
# over the guest's 9p share is slow under emulation), where the guest sees
# it; the guest copies it to its own /tmp before writing it anywhere.
BUILT = TOP / "bench-results" / "scratch"
CORPUS = Path("/tmp/trueno-corpus")
DISK = os.environ.get("TRUENO_UBLK_DISK")


def build_programs_corpus(mib: int, path: Path) -> dict[str, int]:
    """Write the programs corpus to `path`, `mib` MiB; returns bytes taken
    per program."""
    quota = mib * MiB // len(PROGRAMS)
    taken = {}
    with path.open("wb") as out:
        for kind, (script, share) in PROGRAMS.items():
            program = subprocess.Popen([sys.executable, str(TOP / "scripts" / script), str(max(1, int(mib * share))),
                                        "--hold"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            try:
                if program.stdout.readline().strip() != "holding":
                    raise SystemExit(f"bench tiers: {script} ended before it held its memory")
                taken[kind] = copy_anonymous_memory(program.pid, out, quota)
            finally:
                program.stdin.close()
                program.wait()
    return taken


def copy_anonymous_memory(pid: int, out, quota: int) -> int:
    """Process `pid`'s private writable anonymous pages, not all zero, in
    address order, written to `out` up to `quota` bytes; bytes written."""
    done, zero = 0, bytes(4096)
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if not fields[1].startswith("rw") or fields[1][3] != "p" or fields[4] != "0" or \
                    (len(fields) > 5 and fields[5] in ("[vvar]", "[vdso]", "[vsyscall]")):
                continue
            for at in range(start, end, MiB):
                mem.seek(at)
                try:
                    data = mem.read(min(MiB, end - at))
                except OSError:
                    continue
                for page in range(0, len(data), 4096):
                    if done >= quota:
                        return done
                    if data[page:page + 4096] != zero:
                        out.write(data[page:page + 4096])
                        done += 4096
    return done


def build_files_corpus(mib: int, path: Path) -> dict[str, int]:
    """Write the files corpus to `path`, `mib` MiB; returns bytes taken per kind."""
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
    write = timed(f"dd if={CORPUS} of={dev} bs=1M oflag=direct status=none")
    return write, read_all(dev)


def read_all(dev: str) -> float:
    return timed(f"dd if={dev} of=/dev/null bs=1M iflag=direct count={CORPUS.stat().st_size // MiB} status=none")


def read_latency(dev: str) -> dict:
    """Random 4K reads over the corpus for a few seconds: completion latency
    p50 and p99 in microseconds."""
    job = fio(dev, f"--rw=randread --bs=4k --iodepth=1 --size={CORPUS.stat().st_size} "
                   "--time_based --runtime=8 --percentile_list=50:99")
    clat = job["read"]["clat_ns"]["percentile"]
    return {"p50": clat["50.000000"] / 1000, "p99": clat["99.000000"] / 1000}


def zram_dictionary() -> str:
    """zram's zstd dictionary, trained as the store trains its own
    (native/page_store/dictionary.c): 60 KiB, fastCover k=200 d=8, on 1,024
    pages taken evenly from those zstd compresses; the file's path."""
    data = CORPUS.read_bytes()
    pages = [data[at:at + 4096] for at in range(0, len(data) - 4095, 4096)]
    plain = zstandard.ZstdCompressor(level=6)
    fit = [p for p in pages if len(plain.compress(p)) < 4096 - 16]
    samples = [fit[i * len(fit) // 1024] for i in range(min(1024, len(fit)))]
    trained = zstandard.train_dictionary(61440, samples, k=200, d=8, f=18, split_point=1.0, level=6)
    path = Path(tempfile.mkdtemp()) / "zram-dictionary"
    path.write_bytes(trained.as_bytes())
    return str(path)


def measure_zram(size: str, algorithm: str, params: str | None = None) -> dict:
    try:
        zram = Zram(size, algorithm, params=params)
    except OSError as e:
        return {"missing": f"kernel zram takes no {params} here ({e.strerror})"}
    try:
        write, read = write_and_read(zram.path)
        mm = zram.mm_stat()
        return {"held": mm[2], "compr": mm[1], "huge": mm[7], "same": mm[5], "write": write, "read": read,
                "latency": read_latency(zram.path)}
    finally:
        zram.close()


def measure_zram_backed(size: str, after: int) -> dict:
    """zram lz4 over DISK, written back as its users do by hand: the pages
    that did not compress at once, the rest once idle for `after` s."""
    try:
        zram = Zram(size, "lz4", backing=DISK)
    except OSError as e:
        return {"missing": f"kernel zram takes no backing device here ({e.strerror}: CONFIG_ZRAM_WRITEBACK)"}
    try:
        write, read = write_and_read(zram.path)
        zram.writeback("huge")
        hot = zram.mm_stat()[2]
        time.sleep(after)
        zram.mark_idle()
        zram.writeback("idle")
        return {"held": zram.mm_stat()[2], "held_hot": hot, "backed": zram.bd_stat()[0] * 4096,
                "backed_pages": zram.bd_stat()[0],
                "write": write, "read": read, "cold_read": read_all(zram.path), "latency": read_latency(zram.path)}
    finally:
        zram.close()
        sh(f"blkdiscard {DISK}")


def settle(dev: Trueno, after: int) -> float:
    """Wait until the policy has acted on the corpus, last read now: `after`
    seconds, then until a sweep has found the pages idle and recompression
    and writeback have stopped (no move for 5 s); at most 15 minutes.
    Returns the seconds waited."""
    start = time.monotonic()
    time.sleep(after)
    seen, still = None, 0
    while still < 5 and time.monotonic() - start < after + 900:
        st = dev.stat()
        moves = (st["recompressions"], st.get("bd_writes"))
        swept = st["idle_pages"] or st.get("bd_count")     # written back: no longer stored
        still = still + 1 if moves == seen and swept else 0
        seen = moves
        time.sleep(1)
    return time.monotonic() - start


def measure_trueno(size: str, options: str, after: int) -> dict:
    """Memory held hot (just written) and cold (once the policy has acted)."""
    dev = Trueno(size, f"{options} --recompress-after {after}")
    try:
        worker = psutil.Process(dev.worker_pid())
        time.sleep(1)
        empty = worker.memory_info().rss
        write, read = write_and_read(dev.path)
        hot = dev.stat()
        waited = settle(dev, after) if after else 0.0
        st = dev.stat()
        return {"held": st["mem_used_total"], "held_hot": hot["mem_used_total"], "compr": st["compr_data_size"],
                "backed": st.get("bd_used", 0), "backed_pages": st.get("bd_count", 0),
                "huge": st["huge_pages"], "same": st["same_pages"], "write": write, "read": read,
                "rss_growth": worker.memory_info().rss - empty, "reserve": st["mem_reserve"], "map": st["mem_map"],
                "recompressed": st["recompressed_pages"], "entropy_raw": st["entropy_raw_pages"],
                "background_cpu": st["background_cpu_seconds"], "waited": waited,
                "cold_read": read_all(dev.path), "latency": read_latency(dev.path)}
    finally:
        dev.close()


def measure_zram_tier(size: str) -> dict:
    """Each row just written: RAM held by our store and the zram device."""
    rows = {"zram lz4": measure_zram(size, "lz4")}
    # --zram-entropy: none (no zram tier), every page (8) or those under 6 bits a byte
    for name, entropy in (("trueno lz4", None), ("trueno lz4 zram", "8"), ("trueno lz4 tiered", "6")):
        zram = Zram(size, "lz4") if entropy else None
        options = "--algorithm lz4" + (f" --zram-device {zram.path} --zram-entropy {entropy}" if zram else "")
        try:
            dev = Trueno(size, f"{options} --recompress-after 0")
            try:
                write, read = write_and_read(dev.path)
                st = dev.stat()
                rows[name] = {"held": st["mem_used_total"] + st["zram_mem_used_total"],
                              "in_zram": st["zram_pages"], "pages": st["pages_stored"], "write": write,
                              "read": read, "latency": read_latency(dev.path)}
            finally:
                dev.close()
        finally:
            if zram:
                zram.close()
    return rows


def print_zram_tier(rows: dict) -> None:
    base = rows["zram lz4"]
    print("kernel zram as a tier, just written: held: mem_used_total of our store plus that of the zram "
          "device it puts pages in; x: against kernel zram lz4 alone; write/read x: zram's time over ours")
    print(f"{'target':<20}{'held MiB':>9}{'x lz4':>7}{'in zram':>8}{'write x':>8}{'read x':>7}"
          f"{'4K p50 us':>10}{'p99 us':>8}")
    for name, r in rows.items():
        share = f"{r['in_zram'] / r['pages']:>8.0%}" if "in_zram" in r else f"{'-':>8}"
        print(f"{name:<20}{r['held'] / MiB:>9.1f}{r['held'] / base['held']:>7.2f}{share}"
              f"{base['write'] / r['write']:>8.2f}{base['read'] / r['read']:>7.2f}"
              f"{r['latency']['p50']:>10.0f}{r['latency']['p99']:>8.0f}")


def write_pages(dev: str) -> int:
    """The corpus written to `dev` a page at a time, as swap writes; the
    writes that failed."""
    failed = 0
    buf = mmap.mmap(-1, 4096)                   # aligned, as O_DIRECT wants
    fd = os.open(dev, os.O_WRONLY | os.O_DIRECT)
    try:
        with CORPUS.open("rb") as corpus:
            for offset in range(0, CORPUS.stat().st_size, 4096):
                buf[:] = corpus.read(4096)
                try:
                    os.pwrite(fd, buf, offset)
                except OSError:
                    failed += 1
    finally:
        os.close(fd)
    return failed


def reads_back(dev: str) -> bool:
    with open(dev, "rb") as d, CORPUS.open("rb") as corpus:
        return all(d.read(MiB) == corpus.read(MiB) for _ in range(0, CORPUS.stat().st_size, MiB))


def measure_mem_limit(size: str) -> tuple[int, dict]:
    """The limit (half of what zram lz4 holds for the corpus), and each
    device's figures written through it."""
    zram = Zram(size, "lz4")
    try:
        sh(f"dd if={CORPUS} of={zram.path} bs=1M oflag=direct status=none")
        limit = zram.mm_stat()[2] // 2 // MiB * MiB
    finally:
        zram.close()
    rows = {}
    zram = Zram(size, "lz4")
    try:
        (zram.sysfs / "mem_limit").write_text(str(limit))
        failed = write_pages(zram.path)
        rows["zram lz4"] = {"failed": failed, "peak": zram.mm_stat()[4], "backed": 0,
                            "intact": reads_back(zram.path)}
    finally:
        zram.close()
    dev = Trueno(size, f"--algorithm lz4 --mem-limit {limit} --backing-dev {DISK}")
    try:
        failed = write_pages(dev.path)
        st = dev.stat()
        rows["trueno lz4 +disk"] = {"failed": failed, "peak": st["mem_used_max"], "backed": st["bd_used"],
                                    "intact": reads_back(dev.path)}
    finally:
        dev.close()
        sh(f"blkdiscard {DISK}")
    return limit, rows


def print_mem_limit(limit: int, rows: dict) -> None:
    print(f"the corpus written a page at a time through a memory limit of {limit / MiB:.0f} MiB (half of what "
          "kernel zram lz4 holds for it): zram's mem_limit, ours --mem-limit with the disk as backing device; "
          "peak: mem_used_max (ours: the page map and reserve included)")
    print(f"{'target':<18}{'failed writes':>14}{'peak MiB':>9}{'disk MiB':>9}  every page reads back")
    for name, r in rows.items():
        print(f"{name:<18}{r['failed']:>14}{r['peak'] / MiB:>9.1f}{r['backed'] / MiB:>9.1f}  "
              f"{'yes' if r['intact'] else 'no'}")


CORPORA = {"files": build_files_corpus, "programs": build_programs_corpus}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=int, default=192, metavar="MIB", help="each corpus's size in MiB")
    ap.add_argument("--data", choices=tuple(CORPORA), action="append",
                    help="the corpus (repeatable; default: both); --only takes the first")
    ap.add_argument("--recompress-after", type=int, default=DEFAULT_RECOMPRESS_AFTER, metavar="SECONDS",
                    help="the devices' --recompress-after: how long the corpus is left idle")
    ap.add_argument("--huge-thresholds", metavar="LIST", default="",
                    help="also trueno lz4 with each of these --huge-threshold values (bytes, comma-separated)")
    ap.add_argument("--build-corpus", action="store_true", help="only build the corpora (natively)")
    ap.add_argument("--only", choices=("zram-tier", "mem-limit"),
                    help="only that part: kernel zram as a tier, or writes through a memory limit")
    args = ap.parse_args()
    corpora = (args.data or list(CORPORA))[:1 if args.only else None]
    for data in corpora:
        built = BUILT / f"{data}-{args.corpus}M"
        if args.build_corpus or not built.exists():
            BUILT.mkdir(parents=True, exist_ok=True)
            taken = CORPORA[data](args.corpus, built)
            built.with_suffix(".json").write_text(json.dumps(taken))
    if args.build_corpus:
        return
    for data in corpora:
        built = BUILT / f"{data}-{args.corpus}M"
        taken = json.loads(built.with_suffix(".json").read_text())
        shutil.copyfile(built, CORPUS)
        print(f"tiers benchmark: kernel {sh('uname -r').strip()}, corpus of {data}, "
              + ", ".join(f"{kind} {n / MiB:.1f} MiB" for kind, n in taken.items()))
        try:
            measure_corpus(args)
        finally:
            CORPUS.unlink()


def measure_corpus(args) -> None:
    """The tables for the corpus at CORPUS."""
    size, after = f"{args.corpus + 64}M", args.recompress_after
    if args.only == "zram-tier":
        print_zram_tier(measure_zram_tier(size))
        return
    if args.only == "mem-limit":
        if not DISK:
            raise SystemExit("bench tiers --only mem-limit: needs an empty disk ($TRUENO_UBLK_DISK)")
        print_mem_limit(*measure_mem_limit(size))
        return
    rows = {"zram lz4": measure_zram(size, "lz4"), "zram zstd": measure_zram(size, "zstd"),
            "zram zstd dict": measure_zram(size, "zstd", f"dict={zram_dictionary()}"),
            "trueno lz4": measure_trueno(size, "--algorithm lz4", after),
            "trueno zstd": measure_trueno(size, "--algorithm zstd", after)}
    for threshold in filter(None, args.huge_thresholds.split(",")):
        rows[f"trueno lz4 huge>{threshold}"] = measure_trueno(
            size, f"--algorithm lz4 --huge-threshold {threshold}", after)
    backed = {}
    if DISK:
        backed = {"zram lz4 +disk": measure_zram_backed(size, after),
                  "trueno lz4 +disk": measure_trueno(
                      size, f"--algorithm lz4 --backing-dev {DISK} --writeback-after {after}", after)}

    lz4, zstd = rows["zram lz4"], rows["zram zstd"]
    print(f"memory held: mem_used_total (ours, as zram counts its own: the pool, the reserve included; "
          f"the page map beside it), hot: just "
          f"written; cold: left idle {after} s and until recompression stopped (default policy otherwise); "
          "x: against kernel zram, same boot; compr: the payloads (compr_data_size); beyond: cold less compr; "
          "write/read x: zram's time over ours, same codec")
    width = max(map(len, rows)) + 2
    print(f"{'target':<{width}}{'hot MiB':>8}{'cold MiB':>9}{'x lz4':>7}{'x zstd':>7}{'compr MiB':>10}"
          f"{'beyond':>7}{'huge':>7}{'recomp':>7}{'write x':>8}{'read x':>7}{'cold rd x':>10}{'4K p50 us':>10}"
          f"{'p99 us':>8}{'bg cpu s':>9}")
    for name, r in list(rows.items()):
        if "missing" in r:
            print(f"{name:<{width}}{r['missing']}")
            del rows[name]
            continue
        base = rows["zram " + name.split()[1]]
        print(f"{name:<{width}}{r.get('held_hot', r['held']) / MiB:>8.1f}{r['held'] / MiB:>9.1f}"
              f"{r['held'] / lz4['held']:>7.2f}{r['held'] / zstd['held']:>7.2f}{r['compr'] / MiB:>10.1f}"
              f"{(r['held'] - r['compr']) / MiB:>7.1f}"
              f"{r['huge']:>7}{r.get('recompressed', 0):>7}{base['write'] / r['write']:>8.2f}"
              f"{base['read'] / r['read']:>7.2f}{base['read'] / r.get('cold_read', r['read']):>10.2f}"
              f"{r['latency']['p50']:>10.0f}{r['latency']['p99']:>8.0f}{r.get('background_cpu', 0):>9.1f}")
    for name, r in rows.items():
        if "rss_growth" in r:
            print(f"{name}: daemon RSS growth {r['rss_growth'] / MiB:.1f} MiB; of the memory held, "
                  f"reserve {r['reserve'] / MiB:.1f} MiB; beside it, page map {r['map'] / MiB:.1f} MiB; "
                  f"{r['entropy_raw']} pages raw by entropy; waited {r['waited']:.0f} s for the policy")

    if backed:
        print_backed(backed, lz4, after)


def print_backed(rows: dict, lz4: dict, after: int) -> None:
    """The rows with a backing device; x lz4: RAM held against kernel zram
    lz4's without one; reads: of the whole corpus, cold, mostly from the disk."""
    print(f"with a backing device ({DISK}, a virtio disk of the guest): hot: just written (zram: and its huge "
          f"pages written back); cold: left idle {after} s (zram: then marked idle and its idle pages written "
          "back); x lz4: RAM held against zram lz4 without a disk; on disk: pages there, the room they take, "
          "and its bytes a page; cold rd x: zram +disk's time over ours")
    print(f"{'target':<18}{'hot MiB':>8}{'cold MiB':>9}{'x lz4':>7}{'on disk':>8}{'disk MiB':>9}{'B/page':>7}"
          f"{'cold rd x':>10}{'4K p50 us':>10}{'p99 us':>8}")
    zram = rows["zram lz4 +disk"]
    for name, r in rows.items():
        if "missing" in r:
            print(f"{name:<18}{r['missing']}")
            continue
        vs = f"{zram['cold_read'] / r['cold_read']:>10.2f}" if "cold_read" in zram else f"{'-':>10}"
        per_page = r['backed'] / r['backed_pages'] if r['backed_pages'] else 0
        print(f"{name:<18}{r['held_hot'] / MiB:>8.1f}{r['held'] / MiB:>9.1f}{r['held'] / lz4['held']:>7.2f}"
              f"{r['backed_pages']:>8}{r['backed'] / MiB:>9.1f}{per_page:>7.0f}{vs}{r['latency']['p50']:>10.0f}"
              f"{r['latency']['p99']:>8.0f}")


if __name__ == "__main__":
    main()
