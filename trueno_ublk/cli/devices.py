"""The commands that find, watch and end devices: list, stat, top,
metrics, delete and upgrade."""
import sys
import time

import click

from trueno_ublk.base.errors import UserError
from trueno_ublk.cli.options import live_device, parse_device, require_root


@click.command("list")
@click.option("--output", "-o", "output", metavar="LIST",
              help="Columns, comma-separated (see --output-all for every one).")
@click.option("--output-all", is_flag=True, help="Show every column.")
@click.option("--bytes", "-b", "in_bytes", is_flag=True, help="Sizes in bytes.")
@click.option("--noheadings", "-n", is_flag=True, help="No header line.")
@click.option("--raw", is_flag=True, help="Raw output: single spaces, no alignment.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_devices(output, output_all, in_bytes, noheadings, raw, as_json):
    """List devices like zramctl, including those whose daemon died."""
    import json

    from trueno_ublk.devices.kernel import ORPHAN_STATES
    from trueno_ublk.observe import listing
    columns = (list(listing.COLUMNS) if output_all
               else listing.parse_columns(output) if output else listing.DEFAULT_COLUMNS)
    rows = listing.device_rows()
    if as_json:
        keys = [listing.COLUMNS[c][0] for c in columns]
        click.echo(json.dumps({"devices": [{k: row[k] for k in keys} for row in rows]}, indent=2))
    elif rows or not noheadings:
        click.echo(listing.render(rows, columns, in_bytes, not noheadings, raw))
    for row in rows:
        if row["state"] in ORPHAN_STATES:
            dev_id = row["name"].removeprefix("/dev/ublkb")
            click.echo(f"{row['name']}: {ORPHAN_STATES[row['state']].format(id=dev_id)}", err=True)


@click.command()
@click.argument("devices", nargs=-1)
@click.option("--all", "all_devices", is_flag=True, help="Delete every device.")
@click.option("--force", is_flag=True,
              help="Delete even if mounted or in use as swap (its users get I/O errors).")
def delete(devices, all_devices, force):
    """Stop and delete devices: /dev/ublkbN, ublkbN or N."""
    if not devices and not all_devices:
        raise UserError("name a device to delete (e.g. /dev/ublkb0), or pass --all")
    require_root()
    from trueno_ublk.devices import records
    from trueno_ublk.devices.kernel import kernel_devices
    from trueno_ublk.devices.teardown import delete_device
    ids = [parse_device(d) for d in devices]
    if all_devices:
        ids += [r.dev_id for r in records.load_all()] + sorted(kernel_devices())
    ids = list(dict.fromkeys(ids))
    for i, dev_id in enumerate(ids, 1):
        if sys.stderr.isatty() and len(ids) > 1:
            click.echo(f"deleting /dev/ublkb{dev_id} ({i}/{len(ids)})...", err=True)
        delete_device(dev_id, force)
        click.echo(f"deleted /dev/ublkb{dev_id}")


@click.command()
@click.argument("device")
def upgrade(device):
    """Hand a device to the trueno-ublk installed now: every page kept,
    its I/O held meanwhile (systemctl reload does the same)."""
    from trueno_ublk.devices.handover import upgrade as hand_over
    require_root()
    dev_id = live_device(device)
    now = hand_over(dev_id)
    held = "I/O held" if "USER_RECOVERY_REISSUE" in now.features else "I/O failed meanwhile"
    click.echo(f"/dev/ublkb{dev_id}: upgraded in place ({held}); worker {now.worker_pid}")


@click.command()
@click.argument("device")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--mm-stat", is_flag=True, help="zram's mm_stat line.")
@click.option("--io-stat", is_flag=True, help="zram's io_stat line.")
@click.option("--bd-stat", is_flag=True, help="zram's bd_stat line: pages on the backing device, read, written.")
def stat(device, as_json, mm_stat, io_stat, bd_stat):
    """Memory and I/O statistics of a device, with zram's meanings."""
    import json

    from trueno_ublk.base import stats
    from trueno_ublk.devices import admin
    dev_id = live_device(device)
    reply = admin.request(dev_id, "stat")
    figures = stats.figures(reply)
    stored = "orig_data_size" in figures         # a store that holds pages
    ratio = stats.compression_ratio(figures) if stored else 0.0
    lines = [line for line, wanted in (("mm_stat", mm_stat), ("io_stat", io_stat), ("bd_stat", bd_stat)) if wanted]
    for line in lines:
        click.echo(stats.zram_line(figures, line))
    if lines:
        return
    features = reply["device"].get("features", [])      # what ADD_DEV negotiated
    policy, tiers = reply.get("policy", {}), stats.tiers(figures) if stored else {}
    if as_json:
        click.echo(json.dumps({"device": f"/dev/ublkb{dev_id}", **figures, "compression_ratio": ratio,
                               "tiers": tiers, "policy": policy, "features": features}, indent=2))
        return
    for key, value in [*figures.items(), ("compression_ratio", ratio),
                       *((f"tier_{name}", f"{t['pages']} pages, {t['bytes']} bytes") for name, t in tiers.items()),
                       *((key.replace("_", "-"), value) for key, value in policy.items()),
                       ("features", ",".join(features) or "-")]:
        click.echo(f"{key:<22} {' '.join(map(str, value)) if isinstance(value, list) else value}")


@click.command("metrics")
def metrics_command():
    """Every device's figures in Prometheus' text format (for a textfile collector)."""
    require_root()
    from trueno_ublk.devices import admin, records
    from trueno_ublk.observe import metrics
    devices = [(f"ublkb{record.dev_id}", admin.live_stat(record)) for record in records.load_all()]
    click.echo(metrics.render(devices), nl=False)


@click.command()
@click.argument("device", required=False)
@click.option("--interval", "-i", type=click.FloatRange(0.1, 3600), default=1.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--once", is_flag=True, help="Print one frame as text (rates over one interval) and exit.")
def top(device, interval, once):
    """A live view of every device (or DEVICE): I/O rates, compression, memory, queues."""
    require_root()
    from trueno_ublk.devices import records
    from trueno_ublk.observe import top as live_view
    dev_ids = [parse_device(device)] if device else None
    if dev_ids and records.load(dev_ids[0]) is None:
        raise UserError(f"no such device: /dev/ublkb{dev_ids[0]}")
    if once:
        before = live_view.sample(dev_ids)
        time.sleep(interval)
        click.echo("\n".join(live_view.frame(live_view.sample(dev_ids), before)))
        return
    if not sys.stdout.isatty():
        raise UserError("top needs a terminal: use --once for plain text")
    live_view.run(dev_ids, interval)

