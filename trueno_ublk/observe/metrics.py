"""The metrics of every device: its statistics (stats.STATS, a metric
each) and a few figures of its record, its tiers and its queues. In
Prometheus' text exposition format (0.0.4) for `trueno-ublk metrics`
(node_exporter's textfile collector) and the daemon's opt-in HTTP endpoint
(`create --metrics-listen`), and as families for OTLP export (otlp.py)."""
import dataclasses
import ipaddress

from trueno_ublk.base import stats

PREFIX = "trueno_ublk_"

# The device's own, from its record (a dict under "device" in the reply);
# `up` has none. Its statistics come from stats.STATS, one metric a row.
DEVICE_METRICS = [
    ("up", "gauge", "", "1 if the device's daemon answers, 0 if it is dead.", None),
    ("device_size_bytes", "gauge", "bytes", "Uncompressed size of the device.", "size"),
    ("recoveries_total", "counter", "", "I/O workers replaced after dying.", "recoveries"),
]
# name, type, unit, help, label, figures -> {label value: sample}
BREAKDOWN_METRICS = [
    ("tier_pages", "gauge", "pages", "Stored pages by where they are (stats.tiers).", "tier",
     lambda figures: {tier: t["pages"] for tier, t in stats.tiers(figures).items()}),
    ("tier_bytes", "gauge", "bytes", "Bytes their payloads take, by tier.", "tier",
     lambda figures: {tier: t["bytes"] for tier, t in stats.tiers(figures).items()}),
]
# name, type, unit, help, key of each queue in the reply's "queues"
QUEUE_METRICS = [
    ("queue_inflight", "gauge", "", "Requests the queue is serving now.", "inflight"),
    ("queue_cpu_seconds_total", "counter", "seconds", "CPU time of the queue's thread.", "cpu_seconds"),
]


@dataclasses.dataclass
class Family:
    """One metric and its samples: ({label: value}, number) pairs."""
    name: str                       # without PREFIX
    kind: str                       # "gauge" or "counter"
    unit: str                       # "bytes", "pages", "seconds" or "" (stats.Stat.unit)
    help: str
    samples: list = dataclasses.field(default_factory=list)


def declared() -> list[Family]:
    """Every metric there is, without samples."""
    return ([Family(name, kind, unit, help_text) for name, kind, unit, help_text, _ in DEVICE_METRICS]
            + [Family(s.metric, s.kind, s.unit, s.help) for s in stats.STATS]
            + [Family(name, kind, unit, help_text) for name, kind, unit, help_text, *_ in BREAKDOWN_METRICS]
            + [Family(name, kind, unit, help_text) for name, kind, unit, help_text, _ in QUEUE_METRICS])


def families(devices: list[tuple[str, dict | None]]) -> list[Family]:
    """Every metric with a sample, for (device name, stat reply or None if
    dead) pairs: what both the Prometheus text and OTLP export carry."""
    live = [(device, reply, stats.figures(reply)) for device, reply in devices if reply is not None]
    found = []
    for name, kind, unit, help_text, key in DEVICE_METRICS:
        family = Family(name, kind, unit, help_text)
        for device, reply in devices:
            if key is None:
                family.samples.append(({"device": device}, 0 if reply is None else 1))
            elif reply is not None and key in reply.get("device", {}):
                family.samples.append(({"device": device}, reply["device"][key]))
        found.append(family)
    for s in stats.STATS:
        family = Family(s.metric, s.kind, s.unit, s.help)
        for device, _, figures in live:
            if s.key not in figures:
                continue
            if s.label:         # a list: one sample a place, labelled with it
                family.samples += [({"device": device, s.label: f"{i}-{i + 1}"}, n)
                                   for i, n in enumerate(figures[s.key])]
            else:
                family.samples.append(({"device": device}, figures[s.key]))
        found.append(family)
    for name, kind, unit, help_text, label, breakdown in BREAKDOWN_METRICS:
        found.append(Family(name, kind, unit, help_text,
                            [({"device": device, label: value}, n)
                             for device, _, figures in live if "entropy_pages" in figures
                             for value, n in breakdown(figures).items()]))
    for name, kind, unit, help_text, key in QUEUE_METRICS:
        found.append(Family(name, kind, unit, help_text,
                            [({"device": device, "queue": str(q["id"])}, q[key])
                             for device, reply, _ in live for q in reply.get("queues", []) if key in q]))
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
