"""`trueno-ublk benchmark codecs`: the page codec's speed and ratio per
algorithm, on generated data of a chosen kind or on a user's file, with
one thread and with every CPU (trueno_ublk.base.pagecodec)."""
import dataclasses
import os
import random
import time
from pathlib import Path

from trueno_ublk.base.pagecodec import PageCodec, is_same_filled
from trueno_ublk.base.units import PAGE_SIZE

DATA_KINDS = ("zero", "text", "mixed", "random")
DEFAULT_ALGORITHMS = "lz4,lz4hc,zstd,zstd:6"
WORDS = ("the page store keeps every page of swap compressed in memory and a queue serves "
         "requests from the kernel while a background thread recompresses cold pages").split()
GiB = 1 << 30


def generate(kind: str, size: int, seed: int = 1) -> bytes:
    """`size` bytes (whole pages) of `kind`: zero pages; text (words, about
    3:1 under LZ4); mixed (each page half text, half random bytes); random."""
    rng = random.Random(seed)
    pages = size // PAGE_SIZE
    if kind == "zero":
        return bytes(pages * PAGE_SIZE)
    if kind == "random":
        return rng.randbytes(pages * PAGE_SIZE)
    text = " ".join(rng.choice(WORDS) for _ in range(pages * PAGE_SIZE // 5)).encode()
    if kind == "text":
        return text[:pages * PAGE_SIZE]
    half = PAGE_SIZE // 2
    return b"".join(text[i * half:(i + 1) * half] + rng.randbytes(half) for i in range(pages))


def load(data: str, size: int) -> tuple[str, bytes]:
    """The data a run measures, and what to call it: a kind of DATA_KINDS,
    or the first `size` bytes of a file (whole pages). ValueError otherwise."""
    if data in DATA_KINDS:
        return data, generate(data, size)
    path = Path(data)
    try:
        with path.open("rb") as f:
            content = f.read(size)
    except OSError as e:
        raise ValueError(f"--data is {', '.join(DATA_KINDS)} or a readable file: {data}: "
                         f"{e.strerror or e}") from None
    content = content[:len(content) // PAGE_SIZE * PAGE_SIZE]
    if not content:
        raise ValueError(f"{data} holds less than one {PAGE_SIZE}-byte page")
    return path.name, content


@dataclasses.dataclass
class CodecRow:
    algorithm: str
    ratio: float                    # data over payloads (pages that do not compress: a page each)
    compress: dict                  # GiB/s by thread count
    decompress: dict


def best_seconds(work, repeats: int) -> float:
    """The shortest of `repeats` timings of work() (also scripts/bench store's)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def measure(data: bytes, algorithms: list[str], threads: list[int], repeats: int = 3) -> list[CodecRow]:
    rows = []
    for name in algorithms:
        codec = PageCodec(name)
        payloads = codec.compress_pages(data)
        held = sum(len(p) if p is not None else PAGE_SIZE for p in payloads)
        assert codec.decompress_pages(payloads, data) == data, f"{name} does not round-trip"
        rows.append(CodecRow(
            codec.algorithm, round(len(data) / held, 3),
            {n: len(data) / GiB / best_seconds(lambda n=n: codec.compress_pages(data, threads=n), repeats)
             for n in threads},
            {n: len(data) / GiB / best_seconds(lambda n=n: codec.decompress_pages(payloads, data, threads=n),
                                               repeats)
             for n in threads}))
    return rows


def same_fill_speed(data: bytes, repeats: int = 3) -> float:
    """GiB/s of is_same_filled() over the data's pages, one thread."""
    pages = [memoryview(data)[i:i + PAGE_SIZE] for i in range(0, len(data), PAGE_SIZE)]
    return len(data) / GiB / best_seconds(lambda: [is_same_filled(p) for p in pages], repeats)


def thread_counts(threads: int | None) -> list[int]:
    every = threads or os.cpu_count() or 1
    return [1] if every == 1 else [1, every]


def render(what: str, size: int, rows: list[CodecRow], same_fill: float) -> str:
    counts = list(rows[0].compress) if rows else [1]
    heads = "".join(f"{'compress ' + str(n) + 't':>13}" for n in counts) \
        + "".join(f"{'decompress ' + str(n) + 't':>15}" for n in counts)
    lines = [f"page codecs on {what}, {size / (1 << 20):.1f} MiB in {PAGE_SIZE}-byte pages; GiB/s (best of 3), "
             f"ratio = data / payloads",
             f"{'algorithm':<12}{'ratio':>7}{heads}"]
    for r in rows:
        lines.append(f"{r.algorithm:<12}{r.ratio:>7.2f}"
                     + "".join(f"{r.compress[n]:>13.2f}" for n in counts)
                     + "".join(f"{r.decompress[n]:>15.2f}" for n in counts))
    lines.append(f"same-fill check: {same_fill:.2f} GiB/s, one thread")
    return "\n".join(lines)
