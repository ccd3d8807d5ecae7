"""The commands that change a live device: set, resize, compact, idle,
recompress and writeback."""
import click

from trueno_ublk.base.errors import UserError
from trueno_ublk.base.units import PAGE_SIZE, format_size
from trueno_ublk.cli.options import (
    DurationType,
    RecompressAlgorithmType,
    SizeType,
    check_size,
    live_device,
    parse_device,
    require_root,
)
from trueno_ublk.stores.policy import RECOMPRESS_TYPES, WRITEBACK_TYPES


@click.command("set")
@click.argument("device")
@click.option("--mem-limit", type=SizeType(), help="New cap on stored data's memory (0: none).")
@click.option("--reset-mem-used-max", is_flag=True, help="Restart mem_used_max from now.")
def set_(device, mem_limit, reset_mem_used_max):
    """Change a running device's limits."""
    if mem_limit is None and not reset_mem_used_max:
        raise UserError("nothing to set: give --mem-limit SIZE or --reset-mem-used-max")
    require_root()
    from trueno_ublk.devices import admin
    admin.request(live_device(device), "set", mem_limit=mem_limit,
                  reset_mem_used_max=reset_mem_used_max)


@click.command()
@click.argument("device")
@click.argument("size", type=SizeType())
def resize(device, size):
    """Grow or shrink a live device (Linux 6.16 or newer). It can grow to 16
    times the size it was created with (up to 4 TiB); it shrinks only when no
    page is stored past the new end."""
    check_size("SIZE", size)
    require_root()
    from trueno_ublk.devices import admin
    dev_id = live_device(device)
    admin.request(dev_id, "resize", size=size)
    click.echo(f"/dev/ublkb{dev_id}: {format_size(size)}")


@click.command()
@click.argument("device")
def compact(device):
    """Move stored pages together and give freed memory back."""
    require_root()
    from trueno_ublk.devices import admin
    freed = admin.request(live_device(device), "compact")["pages_freed"]
    click.echo(f"compacted /dev/ublkb{parse_device(device)}: {freed * 4} KiB given back")


@click.command()
@click.argument("device")
@click.option("--age", type=DurationType, default=0,
              help="Only pages not read or written for this long (seconds, or 10m, 1h); default: every stored page.")
def idle(device, age):
    """Mark stored pages idle, as zram's idle attribute does; the next access
    clears a page's mark. `recompress --type idle` then takes them."""
    require_root()
    from trueno_ublk.devices import admin
    marked = admin.request(live_device(device), "idle", age=age)["marked"]
    click.echo(f"/dev/ublkb{parse_device(device)}: {marked} pages marked idle")


@click.command()
@click.argument("device")
@click.option("--type", "kind", type=click.Choice(RECOMPRESS_TYPES), default="all", show_default=True,
              help="idle: pages marked idle (see `idle`); huge: pages stored raw; all: every page.")
@click.option("--algorithm", "-a", type=RecompressAlgorithmType,
              help="Codec to recompress with (default: the device's recompress-algorithm).")
@click.option("--max-pages", type=click.IntRange(0, 2**63), default=0, help="Stop after this many pages (0: no limit).")
def recompress(device, kind, algorithm, max_pages):
    """Recompress stored pages now with a stronger codec, where that makes
    them smaller; pages it would not shrink are left as they are."""
    require_root()
    from trueno_ublk.devices import admin
    reply = admin.request(live_device(device), "recompress", kind=kind, algorithm=algorithm,
                          max_pages=max_pages, timeout=None)
    click.echo(f"/dev/ublkb{parse_device(device)}: {reply['pages']} pages recompressed, "
               f"{format_size(reply['saved'])} saved")


@click.command()
@click.argument("device")
@click.option("--type", "kind", type=click.Choice(WRITEBACK_TYPES), default="idle", show_default=True,
              help="idle: pages marked idle (see `idle`); huge: pages stored raw; incompressible: "
                   "raw pages no codec shrinks; all: every stored page.")
@click.option("--limit", type=SizeType(), default=0, help="Stop after this much (default: no limit).")
def writeback(device, kind, limit):
    """Write stored pages to the backing device (create --backing-dev) now,
    freeing their memory; read back from it when asked for."""
    require_root()
    from trueno_ublk.devices import admin
    reply = admin.request(live_device(device), "writeback", kind=kind, max_pages=-(-limit // PAGE_SIZE),
                          timeout=None)
    click.echo(f"/dev/ublkb{parse_device(device)}: {reply['pages']} pages written back "
               f"({format_size(reply['pages'] * PAGE_SIZE)})")

