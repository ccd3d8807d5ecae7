"""`trueno-ublk top`: a live view of every device, refreshed each interval.

The figures come from two `stat` samples; the layout is plain lines, so
frame() is testable without a terminal and `--once` prints it as text.
"""
import curses
import time

from trueno_ublk.base import stats
from trueno_ublk.base.units import format_size
from trueno_ublk.devices import admin, records

HEADER = (f"{'DEVICE':<12}{'STATE':<11}{'R IOPS':>8}{'W IOPS':>8}{'R MiB/s':>9}{'W MiB/s':>9}"
          f"{'RATIO':>7}{'MEM USED':>10}{'LIMIT':>8}{'SAME':>6}{'HUGE':>6}{'RECOMP':>7}{'IDLE':>6}"
          f"{'QDEPTH':>8}  QUEUE CPU")


def sample(dev_ids: list[int] | None = None) -> dict[int, tuple[float, dict | None, str]]:
    """{dev_id: (time, stat reply or None, state)} for the devices asked (all if None)."""
    out = {}
    for record in records.load_all():
        if dev_ids is not None and record.dev_id not in dev_ids:
            continue
        status = record.state if record.daemon_alive() else records.State.DEAD
        out[record.dev_id] = (time.monotonic(), admin.live_stat(record), status)
    return out


def _rate(now: dict, before: dict | None, key: str, seconds: float) -> float:
    if not before or seconds <= 0:
        return 0.0
    return max(0, now["io_stat"][key] - before["io_stat"][key]) / seconds


def device_line(dev_id: int, now, before) -> str:
    t1, reply, status = now
    if reply is None:
        return f"{'ublkb%d' % dev_id:<12}{status:<11}"
    t0, previous, _ = before if before else (t1, None, "")
    dt = t1 - t0
    mm, queues = reply.get("mm_stat", {}), reply.get("queues", [])
    stored = mm.get("pages_stored", 0)
    ratio = f"{stats.compression_ratio(mm):.2f}" if mm.get("compr_data_size") else "-"

    def share(key: str) -> str:
        return f"{100 * mm[key] / stored:.0f}%" if stored and key in mm else "-"
    depth = reply["device"]["depth"] * (reply["device"].get("queues") or max(1, len(queues)))
    inflight = sum(q.get("inflight", 0) for q in queues)
    cpu = []
    for q in queues:
        was = next((p for p in (previous or {}).get("queues", []) if p["id"] == q["id"]), None)
        used = (q.get("cpu_seconds", 0) - was.get("cpu_seconds", 0)) / dt if was and dt > 0 else 0.0
        cpu.append(f"q{q['id']} {100 * used:.0f}%")
    mib = 1 << 20
    return (f"{'ublkb%d' % dev_id:<12}{status:<11}"
            f"{_rate(reply, previous, 'reads', dt):>8.0f}{_rate(reply, previous, 'writes', dt):>8.0f}"
            f"{_rate(reply, previous, 'read_bytes', dt) / mib:>9.1f}"
            f"{_rate(reply, previous, 'written_bytes', dt) / mib:>9.1f}"
            f"{ratio:>7}{format_size(mm['mem_used_total']) if mm else '-':>10}"
            f"{format_size(mm['mem_limit']) if mm.get('mem_limit') else '-':>8}"
            f"{share('same_pages') if mm else '-':>6}{share('huge_pages') if mm else '-':>6}"
            f"{share('recompressed_pages') if mm else '-':>7}{share('idle_pages') if mm else '-':>6}"
            f"{f'{inflight}/{depth}':>8}  {' '.join(cpu)}")


def detail_lines(dev_id: int, reply: dict) -> list[str]:
    """Where a live device's pages are (stats.tiers: share of the pages
    stored, bytes their payloads take) and the entropy of the pages
    written (each bucket's share); none for a store that keeps no pages."""
    mm = stats.figures(reply) if reply else {}
    if "entropy_pages" not in mm:
        return []
    name = "ublkb%d" % dev_id
    stored = mm.get("pages_stored", 0)
    tiers = " | ".join(f"{tier} {100 * t['pages'] / stored if stored else 0:.0f}% {format_size(t['bytes'])}"
                       for tier, t in stats.tiers(mm).items())
    written = sum(mm["entropy_pages"])
    entropy = " ".join(f"{i}-{i + 1} {100 * n / written if written else 0:.0f}%"
                       for i, n in enumerate(mm["entropy_pages"]))
    return [f"{name:<12}tiers: {tiers}", f"{name:<12}entropy of pages written, bits a byte: {entropy}"]


def frame(now: dict, before: dict) -> list[str]:
    if not now:
        return ["no devices"]
    details = [line for d in sorted(now) for line in detail_lines(d, now[d][1])]
    return ([HEADER] + [device_line(d, now[d], before.get(d)) for d in sorted(now)]
            + ([""] + details if details else []))


def run(dev_ids: list[int] | None, interval: float) -> None:
    curses.wrapper(_loop, dev_ids, interval)


def _loop(screen, dev_ids, interval: float) -> None:
    curses.curs_set(0)
    screen.timeout(int(interval * 1000))
    before = sample(dev_ids)
    while True:
        now = sample(dev_ids)
        lines = [f"trueno-ublk top -- every {interval:g}s, q quits", ""] + frame(now, before)
        screen.erase()
        height, width = screen.getmaxyx()
        if width < 40 or height < 4:
            screen.addstr(0, 0, "terminal too small"[:max(0, width - 1)])
        else:
            for y, line in enumerate(lines[:height - 1]):
                screen.addstr(y, 0, line[:width - 1])
        screen.refresh()
        before = now
        if screen.getch() in (ord("q"), ord("Q")):
            return
