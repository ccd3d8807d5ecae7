"""`trueno-ublk benchmark`: fio against a scratch trueno-ublk device and a
kernel zram device of the same size, in one run, and the report of it.

Each target is made, filled once with the chosen data, measured (memory
held, then each workload `repeats` times: the median counts), and deleted
before the next is made. Reads run first, over the data the device was
filled with; workloads that write use fio's own buffers, made as
compressible as that data (`Data.fio_options`). Every figure of a trueno
target is also given as a ratio to the kernel zram measured in the same
run with the same codec: on a virtual machine without hardware
acceleration only such ratios mean anything.

The JSON report (what `run()` returns, schema version SCHEMA_VERSION) is the one
owner of the figures; the text and HTML reports are drawn from it. Every
figure is {"value": number, "unit": text}.
"""
import dataclasses
import datetime
import json
import mmap
import os
import platform
import statistics
import subprocess

from trueno_ublk.base.pagecodec import PageCodec
from trueno_ublk.base.units import PAGE_SIZE
from trueno_ublk.benchmark.codecs import DATA_KINDS, load
from trueno_ublk.benchmark.targets import MiB, Trueno, Zram, failure, fio

SCHEMA = "trueno-ublk-benchmark"
SCHEMA_VERSION = 1
SAMPLE_BYTES = 4 * MiB          # of generated data or a file: repeated over the device
FILL_CHUNK = MiB

# name: fio options. Reads come first: they read the data the device was filled with.
WORKLOADS = {
    "randread 4K": "--rw=randread --bs=4k --iodepth=64",
    "seqread 1M": "--rw=read --bs=1M --iodepth=16",
    "randrw 70/30 4K": "--rw=randrw --rwmixread=70 --bs=4k --iodepth=64",
    "randwrite 4K": "--rw=randwrite --bs=4k --iodepth=64",
    "seqwrite 1M": "--rw=write --bs=1M --iodepth=16",
}
# Kernel zram's name for each codec we compare with; other codecs have no baseline.
ZRAM_CODECS = {"lz4": "lz4", "lz4hc": "lz4hc", "zstd": "zstd"}


@dataclasses.dataclass
class Data:
    """What the devices hold: `sample` repeated over the device (None: fio's
    own buffers fill it), and the fio options that make written buffers
    about as compressible."""
    name: str
    source: str                     # "generated", "file" or "fio"
    sample: bytes | None
    fio_options: str
    compressible_percent: int       # of each buffer fio writes


def data_for(kind_or_file: str) -> Data:
    """--data: a kind of DATA_KINDS or a file. ValueError with one line."""
    name, sample = load(kind_or_file, SAMPLE_BYTES)
    source = "generated" if kind_or_file in DATA_KINDS else "file"
    if name == "zero":
        return Data(name, source, sample, "--zero_buffers", 100)
    # fio's compressible share of a buffer compresses to next to nothing and
    # the rest not at all: match the share LZ4 saves on the sample.
    payloads = PageCodec("lz4").compress_pages(sample)
    held = sum(len(p) if p is not None else PAGE_SIZE for p in payloads)
    percent = max(0, min(100, round(100 * (1 - held / len(sample)))))
    return Data(name, source, sample, f"--buffer_compress_percentage={percent} --refill_buffers", percent)


def fio_data(percent: int) -> Data:
    """fio's own buffers, `percent` compressible, for filling as well."""
    return Data(f"fio {percent}% compressible", "fio", None,
                f"--buffer_compress_percentage={percent} --refill_buffers", percent)


@dataclasses.dataclass
class Target:
    name: str
    kind: str                       # "trueno" or "zram"
    options: str                    # create's options, or zram's algorithm
    baseline: str | None = None     # the zram target it is compared with


def default_targets(algorithm: str, queues: int) -> list[Target]:
    """trueno-ublk with these options, and the kernel zram with its codec."""
    family = algorithm.split(":")[0]
    zram = [Target(f"kernel zram {family}", "zram", ZRAM_CODECS[family])] if family in ZRAM_CODECS else []
    return zram + [Target(f"trueno-ublk {algorithm}", "trueno", f"--algorithm {algorithm} --queues {queues}",
                          zram[0].name if zram else None)]


def fill(path: str, data: Data, size: int) -> None:
    """Write the device whole: the sample over and over, by direct I/O (a
    page-aligned buffer), so that no copy stays in the page cache."""
    if data.sample is None:
        fio(path, f"--rw=write --bs=1M --iodepth=16 --size={size} {data.fio_options}")
        return
    buf = mmap.mmap(-1, FILL_CHUNK)
    fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
    try:
        # Long enough for a chunk from any offset within the sample (a page of it, or 4 MiB).
        tiled, at = data.sample * (FILL_CHUNK // len(data.sample) + 2), 0
        for offset in range(0, size, FILL_CHUNK):
            n = min(FILL_CHUNK, size - offset)
            buf[:n] = tiled[at:at + n]
            at = (at + n) % len(data.sample)
            os.pwrite(fd, memoryview(buf)[:n], offset)
        os.fsync(fd)
    finally:
        os.close(fd)
        buf.close()


def figure(value: float | None, unit: str) -> dict:
    return {"value": None if value is None else round(value, 3), "unit": unit}


def ratio(value: float, base: float) -> dict:
    """value / base as a figure; its value is null where base is 0 (zram
    holds nothing for zero pages)."""
    return figure(value / base if base else None, "x")


def measure(path: str, size: int, workload: str, data: Data, runtime: int) -> dict:
    # A fifth of the runtime warms up first, unmeasured: a second by default.
    job = fio(path, f"--size={size} --time_based --runtime={runtime} --ramp_time={runtime // 5} --numjobs=1 "
                    f"{data.fio_options} {workload}")
    both = ("read", "write")
    p99 = max(job[d]["clat_ns"].get("percentile", {}).get("99.000000", 0) for d in both)
    return {"iops": sum(job[d]["iops"] for d in both),
            "bandwidth": sum(job[d]["bw_bytes"] for d in both) / MiB,
            "latency_p99": p99 / 1000}


UNITS = {"iops": "IO/s", "bandwidth": "MiB/s", "latency_p99": "us"}


def run(targets: list[Target], data: Data, size: int, runtime: int, repeats: int,
        workloads: dict = WORKLOADS, progress=lambda target, workload: None) -> dict:
    """Measure every target in turn; the report document. `progress` is
    called after each fio run. A target the kernel cannot make (no zram
    module, a feature it lacks) is listed under "skipped" with the reason."""
    measured, skipped = [], []
    for target in targets:
        try:
            dev = Zram(size, target.options) if target.kind == "zram" else Trueno(size, target.options)
        except (subprocess.CalledProcessError, OSError) as e:
            why = failure(e) if isinstance(e, subprocess.CalledProcessError) else str(e)
            skipped.append({"name": target.name, "why": why})
            for name in workloads:
                for _ in range(repeats):
                    progress(target.name, name)
            continue
        try:
            fill(dev.path, data, size)
            memory = dev.memory()
            cells = []
            for name, workload in workloads.items():
                runs = []
                for _ in range(repeats):
                    runs.append(measure(dev.path, size, workload, data, runtime))
                    progress(target.name, name)
                cells.append({"name": name, "fio": workload,
                              **{key: figure(statistics.median(r[key] for r in runs), UNITS[key]) for key in UNITS}})
        finally:
            dev.close()
        orig, used = memory["orig_data_size"], memory["mem_used_total"]
        measured.append({
            "name": target.name, "kind": target.kind, "options": target.options, "baseline": target.baseline,
            "memory": {"stored": figure(orig / MiB, "MiB"),
                       "compressed": figure(memory["compr_data_size"] / MiB, "MiB"),
                       "held": figure(used / MiB, "MiB"),
                       "ratio": ratio(orig, used)},
            "workloads": cells})
    add_ratios(measured)
    return {"schema": SCHEMA, "version": SCHEMA_VERSION,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "host": host(),
            "parameters": {"size": figure(size / MiB, "MiB"), "runtime": figure(runtime, "s"),
                           "repeats": repeats,
                           "data": {"name": data.name, "source": data.source,
                                    "fio_compressible": figure(data.compressible_percent, "%")}},
            "targets": measured, "skipped": skipped}


def add_ratios(measured: list[dict]) -> None:
    """Each target's figures over its baseline's, where that was measured:
    IOPS and bandwidth (higher is better), p99 and memory held (lower is)."""
    by_name = {t["name"]: t for t in measured}
    for target in measured:
        base = by_name.get(target["baseline"])
        if base is None:
            target["baseline"] = None
            continue
        target["memory"]["held_vs_baseline"] = ratio(target["memory"]["held"]["value"],
                                                     base["memory"]["held"]["value"])
        base_cells = {c["name"]: c for c in base["workloads"]}
        for cell in target["workloads"]:
            other = base_cells[cell["name"]]
            for key in ("iops", "latency_p99"):
                cell[f"{key}_vs_baseline"] = ratio(cell[key]["value"], other[key]["value"])


def host() -> dict:
    return {"kernel": platform.release(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "virtualization": virtualization()}


def virtualization() -> str:
    """The hypervisor systemd-detect-virt finds (qemu: emulated, kvm, none...);
    empty if unknown. Containers are not asked about: they share the host's CPU."""
    try:
        result = subprocess.run(["systemd-detect-virt", "--vm"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip()


def to_json(doc: dict) -> str:
    return json.dumps(doc, indent=2)


def shown(ratio_figure: dict | None, unit: str = "x") -> str:
    """A ratio as the reports print it: 0.84x; "-" where there is none."""
    if ratio_figure is None or ratio_figure["value"] is None:
        return "-"
    return f"{ratio_figure['value']:.2f}{unit}"


def caveat(doc: dict) -> str:
    if any(t["baseline"] for t in doc["targets"]):
        return ("x zram = trueno-ublk's figure over kernel zram's, same codec, same run "
                "(under emulation only these ratios mean anything)")
    return "no kernel zram in this run, so no ratios: under emulation the figures alone mean little"


def render_text(doc: dict) -> str:
    p = doc["parameters"]
    lines = [f"trueno-ublk benchmark: kernel {doc['host']['kernel']}, {p['size']['value']:g} MiB devices, "
             f"data {p['data']['name']}, median of {p['repeats']} x {p['runtime']['value']:g}s",
             caveat(doc), ""]
    width = max([len(t["name"]) for t in doc["targets"]] + [6]) + 2
    lines.append(f"{'target':<{width}}{'workload':<18}{'IOPS':>10}{'MiB/s':>9}{'p99 us':>9}{'x zram':>8}")
    for t in doc["targets"]:
        for c in t["workloads"]:
            vs = shown(c.get("iops_vs_baseline"))
            lines.append(f"{t['name']:<{width}}{c['name']:<18}{c['iops']['value']:>10.0f}"
                         f"{c['bandwidth']['value']:>9.1f}{c['latency_p99']['value']:>9.0f}{vs:>8}")
    lines += ["", f"{'target':<{width}}{'stored MiB':>11}{'held MiB':>10}{'ratio':>7}{'x zram':>8}"]
    for t in doc["targets"]:
        m = t["memory"]
        lines.append(f"{t['name']:<{width}}{m['stored']['value']:>11.1f}{m['held']['value']:>10.1f}"
                     f"{shown(m['ratio'], ''):>7}{shown(m.get('held_vs_baseline')):>8}")
    for s in doc["skipped"]:
        lines.append(f"skipped {s['name']}: {s['why']}")
    return "\n".join(lines)
