"""The `stat` reply: what a daemon answers on its admin socket, read by
`stat`, `list`, `top` and the metrics. Declared once here.

    {"device":  the daemon's record (records.DeviceRecord, as a dict),
     "mm_stat": the store's memory figures, zram's mm_stat names (MM_STAT,
                plus mem_reserve, mem_map, pages_stored, notify_free,
                reserve_misses) and the cold-page policy's (recompressed_*,
                recompressions, recompress_saved, idle_pages, entropy_*,
                background_*: ps_stats in native/page_store.h); {} for a
                store that holds nothing,
     "policy":  the cold-page policy (policy.Policy, as a dict); {} for a
                store that does not compress,
     "io_stat": request counters (queue_server.h's struct io_counters),
     "queues":  [{"id", "tid", "inflight", "cpu_seconds"}, ...]: one per
                serving thread; "id" is its queue's number, "Q.T" for thread
                T of queue Q where threads share a queue (--queue-threads)}

Two ratios are derived from it, named as zram's tools name them:
comp_ratio() is zramctl's COMP-RATIO (DATA / TOTAL: what the memory used
holds, all overheads counted), compression_ratio() the codec's alone
(DATA / COMPR).
"""
from trueno_ublk.base.units import PAGE_SIZE

# zram's mm_stat and io_stat lines, field by field (Documentation/admin-guide/
# blockdev/zram.rst); `stat --mm-stat` and `--io-stat` print them in this order.
MM_STAT = ("orig_data_size", "compr_data_size", "mem_used_total", "mem_limit", "mem_used_max",
           "same_pages", "pages_compacted", "huge_pages")
IO_STAT = ("failed_reads", "failed_writes", "invalid_io", "notify_free")
BD_STAT = ("bd_count", "bd_reads", "bd_writes")


def tiers(mm: dict) -> dict:
    """Where the stored pages are, {tier: {"pages", "bytes"}}: same-filled
    (one word), the store's fast codec, raw (huge), recompressed one by one
    (the cold-page policy's codec), in frames of several cold pages, and,
    with a backing device, on it (its bytes there, not in RAM), and with
    the zram tier, in kernel zram (its bytes: what zram holds compressed)."""
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
