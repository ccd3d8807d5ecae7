"""The metrics of every device, declared once here: in Prometheus' text
exposition format (0.0.4) for `trueno-ublk metrics` (node_exporter's
textfile collector) and the daemon's opt-in HTTP endpoint (`create
--metrics-listen`), and as families for OTLP export (otlp.py)."""
import dataclasses
import ipaddress

from trueno_ublk.observe import stats

PREFIX = "trueno_ublk_"

# name, type, help, where the value comes from in a `stat` reply
DEVICE_METRICS = [
    ("up", "gauge", "1 if the device's daemon answers, 0 if it is dead.", None),
    ("device_size_bytes", "gauge", "Uncompressed size of the device.", ("device", "size")),
    ("recoveries_total", "counter", "I/O workers replaced after dying.", ("device", "recoveries")),
    ("orig_data_bytes", "gauge", "Uncompressed bytes stored.", ("mm_stat", "orig_data_size")),
    ("compr_data_bytes", "gauge", "Compressed bytes stored.", ("mm_stat", "compr_data_size")),
    ("mem_used_bytes", "gauge", "Memory holding the stored data.", ("mm_stat", "mem_used_total")),
    ("mem_limit_bytes", "gauge", "Cap on mem_used (0: none).", ("mm_stat", "mem_limit")),
    ("mem_used_max_bytes", "gauge", "Peak of mem_used.", ("mm_stat", "mem_used_max")),
    ("mem_reserve_bytes", "gauge",
     "Part of mem_used faulted in ahead of writes, so that swap-out never waits for memory.",
     ("mm_stat", "mem_reserve")),
    ("mem_map_bytes", "gauge", "Part of mem_used holding the page map (16 bytes a device page).",
     ("mm_stat", "mem_map")),
    ("same_pages", "gauge", "Pages stored as one repeated word.", ("mm_stat", "same_pages")),
    ("huge_pages", "gauge", "Pages stored uncompressed.", ("mm_stat", "huge_pages")),
    ("pages_compacted_total", "counter", "Pages given back by compaction.", ("mm_stat", "pages_compacted")),
    ("notify_free_total", "counter", "Pages freed by discard.", ("mm_stat", "notify_free")),
    ("reserve_misses_total", "counter",
     "Writes that found the reserve empty (stored in a larger free slot if one was left).",
     ("mm_stat", "reserve_misses")),
    ("recompressed_pages", "gauge", "Pages held in the cold-page codec now.", ("mm_stat", "recompressed_pages")),
    ("frames", "gauge", "Frames of several cold pages compressed together, held now.", ("mm_stat", "frames")),
    ("recompressions_total", "counter", "Cold pages recompressed.", ("mm_stat", "recompressions")),
    ("recompress_saved_bytes_total", "counter", "Bytes recompression saved when it moved the pages.",
     ("mm_stat", "recompress_saved")),
    ("idle_pages", "gauge", "Stored pages idle (marked, or cold) at the last sweep.", ("mm_stat", "idle_pages")),
    ("entropy_raw_pages_total", "counter", "Pages stored raw on their entropy, without trying the codec.",
     ("mm_stat", "entropy_raw_pages")),
    ("background_cpu_seconds_total", "counter", "CPU time of background compaction and recompression.",
     ("mm_stat", "background_cpu_seconds")),
    ("background_paused_total", "counter", "Background periods left out because the device was busy.",
     ("mm_stat", "background_paused")),
    ("backing_pages", "gauge", "Pages on the backing device.", ("mm_stat", "bd_count")),
    ("backing_size_bytes", "gauge", "The backing device's size (0: none).", ("mm_stat", "backing_bytes")),
    ("backing_reads_total", "counter", "Pages read from the backing device.", ("mm_stat", "bd_reads")),
    ("backing_writes_total", "counter", "Pages written to the backing device.", ("mm_stat", "bd_writes")),
    ("backing_read_errors_total", "counter", "Reads the backing device failed (each failed a page's read).",
     ("mm_stat", "bd_read_errors")),
    ("backing_write_errors_total", "counter", "Writebacks the backing device failed (their pages stayed in RAM).",
     ("mm_stat", "bd_write_errors")),
    ("reads_total", "counter", "Read requests.", ("io_stat", "reads")),
    ("writes_total", "counter", "Write requests.", ("io_stat", "writes")),
    ("discards_total", "counter", "Discard and write-zeroes requests.", ("io_stat", "discards")),
    ("flushes_total", "counter", "Flush requests.", ("io_stat", "flushes")),
    ("read_bytes_total", "counter", "Bytes read.", ("io_stat", "read_bytes")),
    ("written_bytes_total", "counter", "Bytes written.", ("io_stat", "written_bytes")),
    ("failed_reads_total", "counter", "Reads that failed.", ("io_stat", "failed_reads")),
    ("failed_writes_total", "counter", "Writes that failed (mem_limit included).", ("io_stat", "failed_writes")),
    ("invalid_io_total", "counter", "Requests out of range or of unknown kind.", ("io_stat", "invalid_io")),
]
# name, type, help, label, reply -> {label value: sample}
BREAKDOWN_METRICS = [
    ("tier_pages", "gauge", "Stored pages by where they are (stats.tiers).", "tier",
     lambda reply: {tier: t["pages"] for tier, t in stats.tiers(reply["mm_stat"]).items()}),
    ("tier_bytes", "gauge", "Bytes their payloads take, by tier.", "tier",
     lambda reply: {tier: t["bytes"] for tier, t in stats.tiers(reply["mm_stat"]).items()}),
    ("entropy_pages_total", "counter", "Pages written, by bits of entropy a byte (sampled).", "bits",
     lambda reply: {f"{i}-{i + 1}": n for i, n in enumerate(reply["mm_stat"]["entropy_pages"])}),
]
QUEUE_METRICS = [
    ("queue_inflight", "gauge", "Requests the queue is serving now.", "inflight"),
    ("queue_cpu_seconds_total", "counter", "CPU time of the queue's thread.", "cpu_seconds"),
]


@dataclasses.dataclass
class Family:
    """One metric and its samples: ({label: value}, number) pairs."""
    name: str                       # without PREFIX
    kind: str                       # "gauge" or "counter"
    help: str
    samples: list = dataclasses.field(default_factory=list)


def families(devices: list[tuple[str, dict | None]]) -> list[Family]:
    """Every metric with a sample, for (device name, stat reply or None if
    dead) pairs: what both the Prometheus text and OTLP export carry."""
    found = []
    for name, kind, help_text, source in DEVICE_METRICS:
        family = Family(name, kind, help_text)
        for device, reply in devices:
            if source is None:
                family.samples.append(({"device": device}, 0 if reply is None else 1))
            elif reply is not None and source[1] in reply.get(source[0], {}):
                family.samples.append(({"device": device}, reply[source[0]][source[1]]))
        found.append(family)
    for name, kind, help_text, label, breakdown in BREAKDOWN_METRICS:
        found.append(Family(name, kind, help_text,
                            [({"device": device, label: value}, n)
                             for device, reply in devices if reply and "entropy_pages" in reply.get("mm_stat", {})
                             for value, n in breakdown(reply).items()]))
    for name, kind, help_text, key in QUEUE_METRICS:
        found.append(Family(name, kind, help_text,
                            [({"device": device, "queue": str(q["id"])}, q[key])
                             for device, reply in devices if reply for q in reply.get("queues", []) if key in q]))
    return [f for f in found if f.samples]


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(devices: list[tuple[str, dict | None]]) -> str:
    """Exposition text for (device name, stat reply or None if dead) pairs."""
    lines = []
    for f in families(devices):
        lines += [f"# HELP {PREFIX}{f.name} {f.help}", f"# TYPE {PREFIX}{f.name} {f.kind}"]
        for labels, value in f.samples:
            text = ",".join(f'{key}="{escape_label(str(v))}"' for key, v in labels.items())
            lines.append(f"{PREFIX}{f.name}{{{text}}} {value}")
    return "\n".join(lines) + "\n" if lines else ""


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT or :PORT (loopback); ValueError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"'{text}' is not an address: use HOST:PORT or :PORT (e.g. :9851)")
    host = host.strip("[]") if host.startswith("[") and host.endswith("]") else host
    host = host or "127.0.0.1"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ValueError(f"'{host}' is not an IP address (e.g. 127.0.0.1, [::1])") from None
    return host, int(port)
