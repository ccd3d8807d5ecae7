"""The HTML report of `trueno-ublk benchmark --format html`: one file with
its charts drawn inline as SVG and its style inline, so that it opens
anywhere, offline, attached to a bug report. Drawn from the JSON document
(what device.run returns), nothing else."""
import html
import json

from trueno_ublk.benchmark.device import caveat, shown

COLORS = ("#2f6db5", "#e08a1e", "#3c9a4f", "#b33c3c", "#7a55b0", "#6b6b6b")
BAR_HEIGHT, GAP, LABEL_WIDTH, BAR_WIDTH = 18, 4, 260, 420


def bar_chart(title: str, groups: list[tuple[str, list[tuple[str, float, str]]]], reference: float | None = None,
              fmt: str = "{:.0f}") -> str:
    """Horizontal bars: `groups` of (heading, [(label, value, color)]),
    each group scaled to its own largest value (or to the reference line,
    drawn at `reference`, if that is larger)."""
    rows = sum(len(bars) + 1 for _, bars in groups)
    height = rows * (BAR_HEIGHT + GAP) + 36
    width = LABEL_WIDTH + BAR_WIDTH + 90
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'font-family="sans-serif" font-size="12" aria-label="{html.escape(title)}">'
           f'<title>{html.escape(title)}</title>'
           f'<text x="0" y="14" font-size="14" font-weight="bold">{html.escape(title)}</text>']
    y = 26
    for heading, bars in groups:
        out.append(f'<text x="0" y="{y + 13}" font-weight="bold">{html.escape(heading)}</text>')
        y += BAR_HEIGHT + GAP
        scale = max([v for _, v, _ in bars] + [reference or 0]) or 1.0
        top = y
        for label, value, color in bars:
            length = BAR_WIDTH * value / scale
            out.append(f'<text x="{LABEL_WIDTH - 6}" y="{y + 13}" text-anchor="end">{html.escape(label)}</text>'
                       f'<rect x="{LABEL_WIDTH}" y="{y}" width="{length:.1f}" height="{BAR_HEIGHT}" '
                       f'fill="{color}"/>'
                       f'<text x="{LABEL_WIDTH + length + 4:.1f}" y="{y + 13}">{fmt.format(value)}</text>')
            y += BAR_HEIGHT + GAP
        if reference is not None:
            x = LABEL_WIDTH + BAR_WIDTH * reference / scale
            out.append(f'<line x1="{x:.1f}" y1="{top - 2}" x2="{x:.1f}" y2="{y - GAP + 2}" stroke="#000" '
                       f'stroke-dasharray="4 3"/>')
    out.append("</svg>")
    return "".join(out)


def ratio_chart(doc: dict) -> str:
    """IOPS over kernel zram's, per workload, for every compared target; empty if none is."""
    compared = [t for t in doc["targets"] if t.get("baseline")]
    if not compared:
        return ""
    colors = {t["name"]: COLORS[i % len(COLORS)] for i, t in enumerate(compared)}
    groups = [(cell["name"], [(t["name"], t_cell["iops_vs_baseline"]["value"] or 0.0, colors[t["name"]])
                              for t in compared for t_cell in t["workloads"] if t_cell["name"] == cell["name"]])
              for cell in compared[0]["workloads"]]
    return bar_chart("IOPS over kernel zram's (same codec, same run); dashed line: equal", groups,
                     reference=1.0, fmt="{:.2f}x")


def iops_chart(doc: dict) -> str:
    targets = doc["targets"]
    colors = {t["name"]: COLORS[i % len(COLORS)] for i, t in enumerate(targets)}
    names = [c["name"] for c in targets[0]["workloads"]] if targets else []
    groups = [(name, [(t["name"], c["iops"]["value"], colors[t["name"]])
                      for t in targets for c in t["workloads"] if c["name"] == name]) for name in names]
    return bar_chart("IOPS per workload", groups)


def memory_chart(doc: dict) -> str:
    targets = doc["targets"]
    bars = [(t["name"], t["memory"]["held"]["value"], COLORS[i % len(COLORS)]) for i, t in enumerate(targets)]
    return bar_chart("Memory held after the fill, MiB (lower is better)", [("memory held", bars)], fmt="{:.1f} MiB")


def table(heads: list[str], rows: list[list]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in heads)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """body{font-family:sans-serif;margin:2em;color:#222;max-width:60em}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}
td:first-child,td:nth-child(2),th{text-align:left}th{background:#eee}svg{display:block;margin:1em 0}
.caveat{background:#fff6d6;border:1px solid #e6c656;padding:.5em 1em}"""


def render(doc: dict) -> str:
    p, h = doc["parameters"], doc["host"]
    title = f"trueno-ublk benchmark, kernel {h['kernel']}"
    virt = h.get("virtualization") or "unknown"
    perf = table(["target", "workload", "IOPS", "MiB/s", "p99 us", "IOPS x zram", "p99 x zram"],
                 [[t["name"], c["name"], f"{c['iops']['value']:.0f}", f"{c['bandwidth']['value']:.1f}",
                   f"{c['latency_p99']['value']:.0f}", shown(c.get("iops_vs_baseline")),
                   shown(c.get("latency_p99_vs_baseline"))]
                  for t in doc["targets"] for c in t["workloads"]])
    memory = table(["target", "options", "stored MiB", "compressed MiB", "held MiB", "ratio", "held x zram"],
                   [[t["name"], t["options"], f"{t['memory']['stored']['value']:.1f}",
                     f"{t['memory']['compressed']['value']:.1f}", f"{t['memory']['held']['value']:.1f}",
                     shown(t["memory"]["ratio"], ""), shown(t["memory"].get("held_vs_baseline"))]
                    for t in doc["targets"]])
    skipped = "".join(f"<li>{html.escape(s['name'])}: {html.escape(s['why'])}</li>" for s in doc["skipped"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(doc['created'])}; {h['cpus']} CPUs ({html.escape(h['machine'])}), virtualization:
{html.escape(virt)}. Devices of {p['size']['value']:g} MiB filled with {html.escape(p['data']['name'])}
data ({html.escape(p['data']['source'])}; written buffers {p['data']['fio_compressible']['value']:g}%
compressible), median of {p['repeats']} fio runs of {p['runtime']['value']:g} s each.</p>
<p class="caveat">{html.escape(caveat(doc))}. Every target was measured on this machine in this run.</p>
{'<ul>' + skipped + '</ul>' if skipped else ''}
<h2>Speed</h2>
{ratio_chart(doc)}
{iops_chart(doc)}
{perf}
<h2>Memory</h2>
{memory_chart(doc)}
{memory}
<h2>Raw figures</h2>
<details><summary>the JSON report</summary><pre>{html.escape(json.dumps(doc, indent=1))}</pre></details>
</body></html>
"""
