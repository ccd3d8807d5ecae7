"""Every statistic of a device, declared once: the table STATS below.

A row says where a figure comes from (a field of struct ps_stats in
native/page_store/page_store.h, of struct io_counters in native/server/queue_server.h, or a
figure the store works out: PageStore.stats), its key and section in the
`stat` reply, its unit, its metric (Prometheus' name and kind; OTLP's is
made from it), its place in one of kernel zram's stat lines, its `list`
column and its help text. The store's figures (Store.stats), the
daemon's reply (sections()), `stat`, `list`, the metrics and the OTLP
export are all made from it: adding a statistic is one row here plus the
C that counts it. It is a fact every layer shares, from the stores up:
hence its place in the base layer.

The `stat` reply, as a daemon answers it on its admin socket:

    {"device":    the daemon's record (devices.records.DeviceRecord, as a dict),
     "mm_stat":   the store's memory and cold-page figures (MEMORY rows),
     "bd_stat":   the backing device's (BACKING rows),
     "zram_tier": the kernel zram tier's (ZRAM_TIER rows),
     "io_stat":   request counters (IO rows),
                  -- the store sections are {} for a store that holds nothing --
     "policy":    the cold-page policy (stores.policy.Policy, as a dict); {}
                  for a store that does not compress,
     "queues":    [{"id", "tid", "inflight", "cpu_seconds"}, ...]: one per
                  serving thread; "id" is its queue's number, "Q.T" for
                  thread T of queue Q where threads share a queue}

Two ratios are derived from it, named as zram's tools name them:
comp_ratio() is zramctl's COMP-RATIO (DATA / TOTAL: what the memory used
holds, all overheads counted), compression_ratio() the codec's alone
(DATA / COMPR).
"""
import dataclasses

from trueno_ublk._native import lib
from trueno_ublk.base.units import PAGE_SIZE

MEMORY, BACKING, ZRAM_TIER, IO = "mm_stat", "bd_stat", "zram_tier", "io_stat"
SECTIONS = (MEMORY, BACKING, ZRAM_TIER, IO)
STORE_SECTIONS = (MEMORY, BACKING, ZRAM_TIER)   # what the store's figures fill; IO: the queues'


@dataclasses.dataclass(frozen=True)
class Stat:
    key: str                # in the reply, `stat` and `stat --json`
    section: str            # of the reply: SECTIONS
    unit: str               # "bytes", "pages", "seconds" or "" (a count of events or things)
    kind: str               # "gauge" (a level now) or "counter" (only grows)
    metric: str             # Prometheus' name, less the trueno_ublk_ prefix
    help: str
    source: str = ""        # the C field (or the store's own figure) it is; "": key
    scale: float = 1        # value = source * scale
    zram: str = ""          # zram's line it is part of (ZRAM_LINES), in table order
    column: str = ""        # its `list` column
    label: str = ""         # a list of figures: the metric's label for each one's place

    @property
    def field(self) -> str:
        return self.source or self.key


# One row a statistic, in the order `stat` prints them.
STATS = [
    # zram's mm_stat, field by field (Documentation/admin-guide/blockdev/zram.rst)
    Stat("orig_data_size", MEMORY, "bytes", "gauge", "orig_data_bytes", "Uncompressed bytes stored.",
         "pages_stored", PAGE_SIZE, zram="mm_stat", column="DATA"),
    Stat("compr_data_size", MEMORY, "bytes", "gauge", "compr_data_bytes", "Compressed bytes stored.",
         zram="mm_stat", column="COMPR"),
    Stat("mem_used_total", MEMORY, "bytes", "gauge", "mem_used_bytes",
         "Memory holding the stored data: chunks in use and the reserve (zram: its pool).",
         zram="mm_stat", column="TOTAL"),
    Stat("mem_limit", MEMORY, "bytes", "gauge", "mem_limit_bytes", "Cap on mem_used (0: none).",
         zram="mm_stat", column="MEM-LIMIT"),
    Stat("mem_used_max", MEMORY, "bytes", "gauge", "mem_used_max_bytes", "Peak of mem_used.",
         zram="mm_stat", column="MEM-USED"),
    Stat("same_pages", MEMORY, "pages", "gauge", "same_pages", "Pages stored as one repeated word.",
         zram="mm_stat", column="ZERO-PAGES"),
    Stat("pages_compacted", MEMORY, "pages", "counter", "pages_compacted_total", "Pages given back by compaction.",
         zram="mm_stat"),
    Stat("huge_pages", MEMORY, "pages", "gauge", "huge_pages", "Pages stored uncompressed.",
         zram="mm_stat", column="HUGE-PAGES"),
    # the store's own
    Stat("mem_reserve", MEMORY, "bytes", "gauge", "mem_reserve_bytes",
         "Part of mem_used faulted in ahead of writes, so that swap-out never waits for memory.",
         "reserve_chunks", lib.PS_CHUNK_SIZE),
    Stat("mem_map", MEMORY, "bytes", "gauge", "mem_map_bytes",
         "Memory beside mem_used: the page map (16 bytes a device page) and the allocator's bookkeeping "
         "(zram leaves its table out of mem_used likewise).", "map_bytes"),
    Stat("pages_stored", MEMORY, "pages", "gauge", "stored_pages", "Pages stored, same-filled ones included."),
    Stat("notify_free", MEMORY, "pages", "counter", "notify_free_total", "Pages freed by discard.", zram="io_stat"),
    Stat("reserve_misses", MEMORY, "", "counter", "reserve_misses_total",
         "Writes that found the reserve empty (stored in a larger free slot if one was left)."),
    # the cold-page policy's (stores/policy.py)
    Stat("recompressed_pages", MEMORY, "pages", "gauge", "recompressed_pages",
         "Pages held in the cold-page codec now."),
    Stat("recompressed_bytes", MEMORY, "bytes", "gauge", "recompressed_bytes", "Bytes those pages' payloads take.",
         column="RECOMPRESSED"),
    Stat("frames", MEMORY, "", "gauge", "frames", "Frames of several cold pages compressed together, held now."),
    Stat("frame_pages", MEMORY, "pages", "gauge", "frame_pages", "Pages in those frames."),
    Stat("frame_bytes", MEMORY, "bytes", "gauge", "frame_bytes", "Bytes those frames take."),
    Stat("dict_bytes", MEMORY, "bytes", "gauge", "dictionary_bytes",
         "Size of the zstd dictionary cold pages are compressed with, trained on the device's own pages "
         "(0: none yet); its 64 KiB chunk counts in mem_used."),
    Stat("recompressions", MEMORY, "pages", "counter", "recompressions_total", "Cold pages recompressed."),
    Stat("recompress_saved", MEMORY, "bytes", "counter", "recompress_saved_bytes_total",
         "Bytes recompression saved when it moved the pages."),
    Stat("idle_pages", MEMORY, "pages", "gauge", "idle_pages", "Stored pages idle (marked, or cold) at the last sweep.",
         column="IDLE-PAGES"),
    Stat("serving_swap", MEMORY, "", "gauge", "serving_swap",
         "1 once the kernel's swap writes to the device: its pages are cold after seconds."),
    Stat("entropy_raw_pages", MEMORY, "pages", "counter", "entropy_raw_pages_total",
         "Pages stored raw on their entropy, without trying the codec.", "entropy_raw"),
    Stat("entropy_pages", MEMORY, "pages", "counter", "entropy_pages_total",
         "Pages written, by bits of entropy a byte (sampled).", label="bits"),
    Stat("background_cpu_seconds", MEMORY, "seconds", "counter", "background_cpu_seconds_total",
         "CPU time of background compaction, recompression and writeback.", "background_ns", 1e-9),
    Stat("background_paused", MEMORY, "", "counter", "background_paused_total",
         "Background periods left out because the device was busy."),
    # the backing device's: zram's bd_stat, in 4 KiB pages
    Stat("bd_count", BACKING, "pages", "gauge", "backing_pages", "Pages on the backing device.",
         zram="bd_stat", column="BACKING"),
    Stat("bd_used", BACKING, "bytes", "gauge", "backing_used_bytes",
         "Room those pages take on the backing device: a compressed page's payload, packed with others; "
         "a page stored raw, a block.", "bd_used_blocks", PAGE_SIZE),
    Stat("bd_reads", BACKING, "pages", "counter", "backing_reads_total", "Pages read from the backing device.",
         zram="bd_stat"),
    Stat("bd_writes", BACKING, "pages", "counter", "backing_writes_total", "Pages written to the backing device.",
         zram="bd_stat"),
    Stat("bd_read_errors", BACKING, "", "counter", "backing_read_errors_total",
         "Reads the backing device failed (each failed a page's read)."),
    Stat("bd_write_errors", BACKING, "", "counter", "backing_write_errors_total",
         "Writebacks the backing device failed (their pages stayed in RAM)."),
    Stat("backing_bytes", BACKING, "bytes", "gauge", "backing_size_bytes", "The backing device's size (0: none).",
         "bd_blocks", PAGE_SIZE),
    # the kernel zram tier's: its pages, and what its device holds for them
    Stat("zram_pages", ZRAM_TIER, "pages", "gauge", "zram_pages", "Pages in the kernel zram tier."),
    Stat("zram_reads", ZRAM_TIER, "pages", "counter", "zram_reads_total", "Pages read from the zram tier."),
    Stat("zram_writes", ZRAM_TIER, "pages", "counter", "zram_writes_total", "Pages written to the zram tier."),
    Stat("zram_read_errors", ZRAM_TIER, "", "counter", "zram_read_errors_total",
         "Reads the zram tier failed (each failed a page's read)."),
    Stat("zram_write_errors", ZRAM_TIER, "", "counter", "zram_write_errors_total",
         "Writes the zram tier failed (their pages went to RAM)."),
    Stat("zram_discard_errors", ZRAM_TIER, "", "counter", "zram_discard_errors_total",
         "Discards the zram tier failed (zram held a stale copy)."),
    Stat("zram_compr_data_size", ZRAM_TIER, "bytes", "gauge", "zram_compr_data_bytes",
         "Compressed bytes the zram tier's device holds (its mm_stat)."),
    Stat("zram_mem_used_total", ZRAM_TIER, "bytes", "gauge", "zram_mem_used_bytes",
         "Memory the zram tier's device uses (its mm_stat)."),
    # requests, counted by the queue servers
    Stat("reads", IO, "", "counter", "reads_total", "Read requests."),
    Stat("writes", IO, "", "counter", "writes_total", "Write requests."),
    Stat("discards", IO, "", "counter", "discards_total", "Discard and write-zeroes requests."),
    Stat("flushes", IO, "", "counter", "flushes_total", "Flush requests."),
    Stat("read_bytes", IO, "bytes", "counter", "read_bytes_total", "Bytes read."),
    Stat("written_bytes", IO, "bytes", "counter", "written_bytes_total", "Bytes written."),
    Stat("failed_reads", IO, "", "counter", "failed_reads_total", "Reads that failed.", zram="io_stat"),
    Stat("failed_writes", IO, "", "counter", "failed_writes_total",
         "Writes that failed (mem_limit included).", zram="io_stat"),
    Stat("invalid_io", IO, "", "counter", "invalid_io_total", "Requests out of range or of unknown kind.",
         zram="io_stat"),
]
# zram's stat lines, as `stat --mm-stat`, `--io-stat` and `--bd-stat` print them.
ZRAM_LINES = {line: tuple(s.key for s in STATS if s.zram == line) for line in ("mm_stat", "io_stat", "bd_stat")}


def convert(sources: dict, sections_from: tuple[str, ...]) -> dict:
    """The statistics of `sections_from` by key, from `sources` by field
    (ps_stats' or io_counters' C names, or a store's own figures); a row
    whose field is not there is left out."""
    out = {}
    for s in STATS:
        if s.section not in sections_from or s.field not in sources:
            continue
        value = sources[s.field]
        if s.scale != 1:
            value = round(value * s.scale, 3) if s.unit == "seconds" else int(value * s.scale)
        out[s.key] = value
    return out


def sections(store_figures: dict, io_counts: dict) -> dict:
    """The reply's statistics sections, from the store's figures
    (Store.stats) and the queues' summed io_counters; a store with no
    figures gives empty store sections."""
    figures_by_key = {**store_figures, **convert(io_counts, (IO,))}
    return {section: {s.key: figures_by_key[s.key] for s in STATS if s.section == section and s.key in figures_by_key}
            for section in SECTIONS}


def figures(reply: dict) -> dict:
    """Every statistic of a `stat` reply by key, its sections merged
    (what `stat --json` shows)."""
    return {key: value for section in SECTIONS for key, value in reply.get(section, {}).items()}


def zram_line(figures_by_key: dict, line: str) -> str:
    """One of zram's stat lines (ZRAM_LINES) of these figures."""
    return " ".join(str(figures_by_key.get(key, 0)) for key in ZRAM_LINES[line])


def tiers(mm: dict) -> dict:
    """Where the stored pages are, {tier: {"pages", "bytes"}}: same-filled
    (one word), the store's fast codec, raw (huge), recompressed one by one
    (the cold-page policy's codec), in frames of several cold pages, and,
    with a backing device, on it (its bytes there, not in RAM), and with
    the zram tier, in kernel zram (its bytes: what zram holds compressed).
    `mm`: figures(reply)."""
    raw = mm["huge_pages"]
    recompressed = mm.get("recompressed_pages", 0)
    framed, frame_bytes = mm.get("frame_pages", 0), mm.get("frame_bytes", 0)
    backed, in_zram = mm.get("bd_count", 0), mm.get("zram_pages", 0)
    tiers = {
        "same": {"pages": mm["same_pages"], "bytes": 0},
        "fast": {"pages": mm["pages_stored"] - mm["same_pages"] - raw - recompressed - backed - in_zram,
                 "bytes": mm["compr_data_size"] - raw * PAGE_SIZE - mm.get("recompressed_bytes", 0)},
        "raw": {"pages": raw, "bytes": raw * PAGE_SIZE},
        "recompressed": {"pages": recompressed - framed, "bytes": mm.get("recompressed_bytes", 0) - frame_bytes},
        "framed": {"pages": framed, "bytes": frame_bytes},
    }
    if mm.get("backing_bytes"):
        tiers["backing"] = {"pages": backed, "bytes": backed * PAGE_SIZE}
    if mm.get("zram_mem_used_total"):
        tiers["zram"] = {"pages": in_zram, "bytes": mm["zram_compr_data_size"]}
    return tiers


def comp_ratio(mm: dict) -> float:
    """zramctl's COMP-RATIO: uncompressed data over all memory used (0: empty)."""
    total = mm.get("mem_used_total", 0)
    return round(mm["orig_data_size"] / total, 2) if total else 0.0


def compression_ratio(mm: dict) -> float:
    """Uncompressed data over compressed payloads: the codec's ratio (0: none stored)."""
    compr = mm.get("compr_data_size", 0)
    return round(mm["orig_data_size"] / compr, 3) if compr else 0.0
