"""The trueno-ublk command line.

Every error a user can cause ends as one line on stderr and a non-zero exit:
UserError for our own checks, click's errors for malformed options.

Each command imports what it uses when it runs: every call pays for its
imports in start-up time (`--help` needs none of the daemon), and in the
test guest each module costs a trip over an emulated 9p share.
"""
import functools
import operator
import os
import re
import sys
import time

import click
from click.core import ParameterSource

from trueno_ublk.base.codecs import codec_for
from trueno_ublk.base.errors import UserError
from trueno_ublk.base.units import PAGE_SIZE, format_size, parse_size
from trueno_ublk.stores import DEFAULT_HUGE_THRESHOLD, STORES
from trueno_ublk.stores.policy import (
    BACKENDS,
    DEFAULT_ENTROPY_THRESHOLD,
    DEFAULT_RECOMPRESS_AFTER,
    DEFAULT_RECOMPRESS_ALGORITHM,
    DEFAULT_WRITEBACK_AFTER,
    DEFAULT_ZRAM_ENTROPY,
    RECOMPRESS_TYPES,
    WRITEBACK_TYPES,
    parse_duration,
    parse_entropy,
    recompress_codec,
    zram_below,
)

IO_COMMANDS = ("auto", "batch", "per-tag")      # create --io-commands; DeviceConfig.io_commands
IO_WITHOUT_SERVER = ("auto", "hold", "fail")    # create --io-without-server; supervisor.recovery_flags

DELETE_WAIT_SECONDS = 30.0


class SizeType(click.ParamType):
    name = "SIZE"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            return parse_size(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


class ParsedType(click.ParamType):
    """An option's value through `parse(text, option)`, whose ValueError
    becomes click's one-line usage error."""

    def __init__(self, name: str, parse):
        self.name, self.parse = name, parse

    def convert(self, value, param, ctx):
        try:
            return self.parse(value, param.opts[0] if param else self.name)
        except ValueError as e:
            self.fail(str(e), param, ctx)


AlgorithmType = ParsedType("ALGORITHM", lambda text, _: codec_for(text).name)
RecompressAlgorithmType = ParsedType("ALGORITHM", lambda text, _: recompress_codec(text).name)
DurationType = ParsedType("SECONDS", parse_duration)
EntropyType = ParsedType("BITS", lambda text, _: parse_entropy(text))


def _otlp_interval(text, what):
    from trueno_ublk.observe.otlp import parse_interval
    return parse_interval(text, what)


def _check_size(name: str, size: int) -> None:
    from trueno_ublk.base import limits
    if size <= 0:
        raise UserError(f"{name} must be greater than 0")
    if size % PAGE_SIZE:
        raise UserError(f"{name} must be a multiple of 4K ({size} is not)")
    if size > limits.SIZE.high:
        raise UserError(f"{name} must be at most {format_size(limits.SIZE.high)}")


def require_root() -> None:
    if os.geteuid() != 0:
        raise UserError("this command needs root: run it with sudo")


def parse_device(text: str) -> int:
    """A device as users name it: /dev/ublkb0, ublkb0 or 0."""
    m = re.fullmatch(r"(?:/dev/)?(?:ublkb)?(\d+)", text.strip())
    if not m:
        raise UserError(f"'{text}' is not a ublk device (examples: /dev/ublkb0, ublkb0, 0)")
    return int(m.group(1))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="trueno-ublk")
def cli():
    """A compressed RAM block device served from user space over ublk."""


# create's options that a config section gives (--from-config), and where
# in the section (config.DeviceSection) each is.
FROM_CONFIG = {
    "size": "size", "algorithm": "algorithm", "queues": "queues", "mem_limit": "mem_limit", "dev_id": "dev_id",
    "recompress_algorithm": "policy.recompress_algorithm", "recompress_after": "policy.recompress_after",
    "entropy_threshold": "policy.entropy_threshold", "writeback_after": "policy.writeback_after",
    "backing_dev": "backing_dev", "writeback_limit": "writeback_limit", "backend": "backend",
    "zram_device": "zram_device", "zram_entropy": "zram_entropy", "otlp_endpoint": "otlp_endpoint",
    "otlp_interval": "otlp_interval",
}


def _with_config_section(command):
    """--from-config NAME: the section's values for the options not given on
    the command line, and the command that formats its new device."""
    @functools.wraps(command)
    def run(**options):
        format_command = ()
        if options["from_config"]:
            section = _config_section(options["from_config"], options["config_file"])
            given = click.get_current_context().get_parameter_source
            for name, where in FROM_CONFIG.items():
                if given(name) != ParameterSource.COMMANDLINE:
                    options[name] = operator.attrgetter(where)(section)
            format_command = section.format_command
        elif options["config_file"]:
            raise UserError("--config-file goes with --from-config NAME")
        return command(**options, format_command=format_command)
    return run


@cli.command()
@click.option("--size", "-s", type=SizeType(),
              help="Device size (uncompressed), e.g. 8G; a multiple of 4K.")
@click.option("--algorithm", "-a", type=AlgorithmType, default="lz4", show_default=True,
              help="lz4, lz4hc, zstd, zstd:LEVEL or none.")
@click.option("--store", type=click.Choice(sorted(STORES)), default="ram", show_default=True,
              help="; ".join(f"{name}: {what}" for name, what in STORES.items()) + ".")
@click.option("--queues", "-q", type=int, default=1, show_default=True,
              help="Hardware queues, one I/O thread each.")
@click.option("--queue-threads", type=int, default=1, show_default=True,
              help="Threads serving each queue, its tags split between them (Linux 6.16+).")
@click.option("--io-commands", type=click.Choice(IO_COMMANDS), default="auto", show_default=True,
              help="How the kernel hands requests over: batch (many a command, Linux 7.0+; "
                   "one thread a queue), per-tag, or auto (batch where the kernel has it "
                   "and --queue-threads is 1).")
@click.option("--depth", "-d", type=int, default=128, show_default=True,
              help="Requests in flight per queue.")
@click.option("--id", "dev_id", type=int, default=-1, help="Device number N for /dev/ublkbN.")
@click.option("--mem-limit", type=SizeType(), default=0,
              help="Cap on memory for stored data; writes beyond it fail (0: none).")
@click.option("--huge-threshold", type=SizeType(), default=DEFAULT_HUGE_THRESHOLD, show_default=True,
              help="Pages that compress worse than this are stored raw (huge).")
@click.option("--recompress-algorithm", type=RecompressAlgorithmType, default=DEFAULT_RECOMPRESS_ALGORITHM,
              show_default=True, help="Codec that cold pages are recompressed with, in the background.")
@click.option("--recompress-after", type=DurationType, default=DEFAULT_RECOMPRESS_AFTER, show_default=True,
              help="Seconds (or 5m, 2h) a page stays unread and unwritten before it is recompressed; 0: never.")
@click.option("--entropy-threshold", type=EntropyType, default=DEFAULT_ENTROPY_THRESHOLD, show_default=True,
              help="Pages with this many bits of entropy a byte or more (already compressed or "
                   "encrypted) are stored raw without trying the codec; 0: never.")
@click.option("--backing-dev", metavar="PATH", default="",
              help="Block device (or fully written file on ext4/xfs) that `writeback` moves pages to, "
                   "freeing their memory, as zram's backing_dev.")
@click.option("--writeback-after", type=DurationType, default=DEFAULT_WRITEBACK_AFTER, show_default=True,
              help="With --backing-dev: seconds (or 10m, 2h) a page stays unused before the background "
                   "writes it back; incompressible pages go at once; 0: only by hand and to stay "
                   "under --mem-limit.")
@click.option("--writeback-limit", type=SizeType(), default=None,
              help="Bytes writebacks may write in all, as zram's writeback_limit (default: no limit).")
@click.option("--backend", type=click.Choice(BACKENDS), default="memory", show_default=True,
              help="Where pages are kept: memory (this store), zram (every page in the kernel zram "
                   "device --zram-device), or tiered (pages under --zram-entropy there, the rest here).")
@click.option("--zram-device", metavar="PATH", default="",
              help="With --backend zram or tiered: the kernel zram device (/dev/zramN, its disksize "
                   "set, at least --size) pages go to.")
@click.option("--zram-entropy", type=ParsedType("BITS", lambda text, _: parse_entropy(text, "--zram-entropy")),
              default=DEFAULT_ZRAM_ENTROPY, show_default=True,
              help="With --backend tiered: pages with fewer bits of entropy a byte than this go to zram.")
@click.option("--recovery/--no-recovery", default=True, show_default=True,
              help="If the I/O worker dies, serve the device on with a new one, every page kept.")
@click.option("--io-without-server", type=click.Choice(IO_WITHOUT_SERVER), default="auto", show_default=True,
              help="While no daemon serves the device (between a dead one and the next): hold its I/O "
                   "for the next, or fail it (Linux 6.13+); auto holds it where systemd keeps the pages "
                   "for the next daemon (or the kernel cannot fail it) and fails it elsewhere, where "
                   "nothing would come.")
@click.option("--from-config", metavar="NAME",
              help="Take size, algorithm, queues and mem-limit from section [NAME] (ublkbN) "
                   "of the config; options given here win.")
@click.option("--config-file", metavar="FILE",
              help="Read FILE instead of /etc/trueno-ublk.conf and its drop-ins.")
@click.option("--metrics-listen", metavar="ADDR", default="",
              help="Serve Prometheus metrics at http://ADDR/metrics (HOST:PORT, or :PORT for loopback).")
@click.option("--otlp-endpoint", metavar="URL", default="",
              help="Push the metrics to an OpenTelemetry collector over OTLP/HTTP "
                   "(e.g. http://127.0.0.1:4318; /v1/metrics is added to a URL without a path).")
@click.option("--otlp-interval", type=ParsedType("SECONDS", _otlp_interval), default=60, show_default=True,
              help="Seconds (or 5m) between OTLP exports.")
@click.option("--foreground", "-f", is_flag=True,
              help="Serve in this process (for systemd) instead of detaching.")
@_with_config_section
def create(size, algorithm, store, queues, queue_threads, io_commands, depth, dev_id, mem_limit, huge_threshold,
           recompress_algorithm, recompress_after, entropy_threshold, backing_dev, writeback_after, writeback_limit,
           backend, zram_device, zram_entropy, recovery, io_without_server, from_config, config_file,
           metrics_listen, otlp_endpoint, otlp_interval, foreground, format_command):
    """Create a device; prints its path once it is live."""
    if size is None:
        raise UserError("missing --size (e.g. --size 8G), or --from-config NAME")
    _check_size("--size", size)
    from trueno_ublk.base import limits
    for option, value, allowed in (("--queues", queues, limits.queues()),
                                   ("--queue-threads", queue_threads, limits.queues()),
                                   ("--depth", depth, limits.DEPTH),
                                   ("--huge-threshold", huge_threshold, limits.HUGE_THRESHOLD)):
        if value not in allowed:
            raise UserError(f"{option} must be {allowed.describe()}")
    if depth < queue_threads:
        raise UserError(f"--depth {depth} leaves no tag for each of {queue_threads} queue threads")
    if io_commands == "batch" and queue_threads > 1:
        raise UserError("--io-commands batch serves each queue from one thread: not with --queue-threads")
    if dev_id != -1 and dev_id not in limits.DEVICE_ID:
        raise UserError(f"--id must be {limits.DEVICE_ID.describe()}")
    from trueno_ublk.base.control import require_control_device
    from trueno_ublk.daemon.detach import spawn_detached
    from trueno_ublk.daemon.supervisor import DeviceConfig, Supervisor
    from trueno_ublk.devices import records
    from trueno_ublk.observe import metrics
    from trueno_ublk.stores.policy import Policy
    from trueno_ublk.systemd.service import configure_logging
    if mem_limit and not STORES[store].holds_memory:
        raise UserError(f"--mem-limit needs a store that holds memory: the {store} store holds none")
    if backing_dev:
        if not STORES[store].holds_memory:
            raise UserError(f"--backing-dev needs a store that holds memory: the {store} store holds none")
        from trueno_ublk.stores.backing import BackingError, open_backing
        try:
            os.close(open_backing(backing_dev)[0])      # the worker opens it for itself
        except BackingError as e:
            raise UserError(str(e)) from None
    elif writeback_limit is not None:
        raise UserError("--writeback-limit goes with --backing-dev")
    if backend != "memory":
        if not zram_device:
            raise UserError(f"--backend {backend} needs --zram-device /dev/zramN")
        if not STORES[store].holds_memory:
            raise UserError(f"--backend {backend} needs a store that holds memory: the {store} store holds none")
        if backend == "tiered" and not zram_entropy:
            raise UserError("--backend tiered needs --zram-entropy above 0 (0 would send no page to zram)")
        from trueno_ublk.stores.backing import BackingError, open_zram
        try:
            fd, zram_size, _ = open_zram(zram_device)
            os.close(fd)                                # the worker opens it for itself
        except BackingError as e:
            raise UserError(str(e)) from None
        if zram_size < size:
            raise UserError(f"--zram-device {zram_device} holds {format_size(zram_size)}, "
                            f"less than --size {format_size(size)}")
    elif zram_device:
        raise UserError("--zram-device goes with --backend zram or tiered")
    if metrics_listen:
        try:
            metrics.parse_address(metrics_listen)
        except ValueError as e:
            raise UserError(f"--metrics-listen: {e}") from None
    if otlp_endpoint:
        from trueno_ublk.observe import otlp
        try:
            otlp.metrics_url(otlp_endpoint)
        except ValueError as e:
            raise UserError(f"--otlp-endpoint: {e}") from None
        if not otlp.sdk_installed():
            raise UserError(f"--otlp-endpoint: {otlp.SDK_MISSING}")
    require_root()
    require_control_device()
    stale = records.load(dev_id) if dev_id >= 0 else None
    takeover = _kept_device(dev_id, stale) if foreground else None
    if takeover is None and stale is not None and not stale.daemon_alive():
        delete_device(dev_id, force=False)      # left by a daemon that died, its pages with it
    config = DeviceConfig(size=size, algorithm=algorithm, store=store, queues=queues, queue_threads=queue_threads,
                          io_commands=io_commands,
                          depth=depth, dev_id=dev_id, mem_limit=mem_limit,
                          huge_threshold=huge_threshold, recovery=recovery, io_without_server=io_without_server,
                          policy=Policy(recompress_algorithm, recompress_after, entropy_threshold,
                                        writeback_after),
                          backing_dev=backing_dev, writeback_limit=writeback_limit,
                          zram_device=zram_device, zram_below=zram_below(backend, zram_entropy),
                          metrics_listen=metrics_listen, otlp_endpoint=otlp_endpoint, otlp_interval=otlp_interval,
                          format_command=format_command)
    if foreground:
        configure_logging()
        Supervisor(config, on_live=lambda n: click.echo(f"/dev/ublkb{n}"), takeover=takeover).run()
    else:
        click.echo(f"/dev/ublkb{spawn_detached(config)}")


def _kept_device(dev_id: int, stale):
    """Under systemd: the device a previous daemon of this service left,
    if systemd kept its arena (Supervisor takes it over, pages and all)."""
    from trueno_ublk.daemon.supervisor import Takeover, arena_name
    from trueno_ublk.observe import listing
    from trueno_ublk.systemd import service
    stored = service.take_stored_fds()
    arena_fd = stored.pop(arena_name(dev_id), None) if dev_id >= 0 else None
    for name, fd in stored.items():             # not ours: let systemd forget them
        os.close(fd)
        service.drop_stored_fd(name)
    if arena_fd is None:
        return None
    if dev_id not in listing.kernel_devices():  # deleted meanwhile: its pages are nobody's
        click.echo(f"trueno-ublk: /dev/ublkb{dev_id} is gone: its kept pages are dropped", err=True)
        os.close(arena_fd)
        service.drop_stored_fd(arena_name(dev_id))
        return None
    return Takeover(arena_fd, stale.takeovers if stale is not None else 0)


@cli.command("list")
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
        if row["state"] in listing.ORPHAN_STATES:
            dev_id = row["name"].removeprefix("/dev/ublkb")
            click.echo(f"{row['name']}: {listing.ORPHAN_STATES[row['state']].format(id=dev_id)}", err=True)


def _device_in_use(dev_id: int) -> bool:
    """Mounted, active swap and other exclusive holders all make an O_EXCL
    open of the block device fail with EBUSY."""
    import errno
    try:
        fd = os.open(f"/dev/ublkb{dev_id}", os.O_RDONLY | os.O_EXCL)
    except OSError as e:
        return e.errno == errno.EBUSY
    os.close(fd)
    return False


def _holders(dev_id: int) -> str:
    """The processes that have /dev/ublkbN open, as "pid 12 (fio), ..."."""
    path, found = f"/dev/ublkb{dev_id}", []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == path for fd in os.listdir(f"/proc/{pid}/fd")):
                with open(f"/proc/{pid}/comm") as f:
                    found.append(f"pid {pid} ({f.read().strip()})")
        except OSError:
            continue                    # gone, or not ours to look at
    return ", ".join(found) or "a process"


def _safe_stop(dev_id: int) -> None:
    """Stop the device in the kernel only if nothing has it open (7.0+): no
    window between a check and the stop for an opener to slip through."""
    import errno

    from trueno_ublk.base.control import Control, ControlError
    with Control() as ctrl:
        try:
            ctrl.try_stop(dev_id)
        except ControlError as e:
            if e.errno == errno.EBUSY:
                raise UserError(f"/dev/ublkb{dev_id} is open by {_holders(dev_id)}: "
                                "close it first, or pass --force") from None
            if e.errno != errno.ENODEV:         # ENODEV: stopped already (its daemon died)
                raise UserError(f"cannot stop /dev/ublkb{dev_id}: {e.strerror}") from None


def _wait_for_exit(record, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while record.daemon_alive():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _remove_from_kernel(dev_id: int) -> None:
    """STOP_DEV + DEL_DEV for a device no live daemon owns."""
    from trueno_ublk.base.control import Control, ControlError
    with Control() as ctrl:
        if not ctrl.exists(dev_id):
            return
        try:
            ctrl.stop(dev_id)
        except ControlError:
            pass                # already stopped: deleting is what matters
        ctrl.delete(dev_id)


def delete_device(dev_id: int, force: bool) -> None:
    import signal

    from trueno_ublk.base.control import ControlError
    from trueno_ublk.devices import records
    from trueno_ublk.observe import listing
    record = records.load(dev_id)
    if record is None and dev_id not in listing.kernel_devices():
        raise UserError(f"no such device: /dev/ublkb{dev_id}")
    if not force and _device_in_use(dev_id):
        raise UserError(f"/dev/ublkb{dev_id} is in use (mounted, active swap or held open): "
                        "unmount or swapoff it first, or pass --force")
    if not force and record is not None and "SAFE_STOP_DEV" in record.features:
        _safe_stop(dev_id)
    if record is not None and record.daemon_alive():
        # SIGINT: stop now. SIGTERM is also systemd's stop, which swaps
        # off first, and --force means the device goes under its users.
        os.kill(record.pid, signal.SIGINT)
        if not _wait_for_exit(record, DELETE_WAIT_SECONDS):
            raise UserError(f"the daemon of /dev/ublkb{dev_id} (pid {record.pid}) did not stop "
                            f"within {DELETE_WAIT_SECONDS:.0f}s")
    try:
        _remove_from_kernel(dev_id)
    except ControlError as e:
        raise UserError(f"cannot delete /dev/ublkb{dev_id}: {e.strerror}") from None
    records.remove(dev_id)


@cli.command()
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
    from trueno_ublk.observe import listing
    ids = [parse_device(d) for d in devices]
    if all_devices:
        ids += [r.dev_id for r in records.load_all()] + sorted(listing.kernel_devices())
    ids = list(dict.fromkeys(ids))
    for i, dev_id in enumerate(ids, 1):
        if sys.stderr.isatty() and len(ids) > 1:
            click.echo(f"deleting /dev/ublkb{dev_id} ({i}/{len(ids)})...", err=True)
        delete_device(dev_id, force)
        click.echo(f"deleted /dev/ublkb{dev_id}")


UPGRADE_WAIT_SECONDS = 120.0


@cli.command()
@click.argument("device")
def upgrade(device):
    """Hand a device to the trueno-ublk installed now: every page kept,
    its I/O held meanwhile (systemctl reload does the same)."""
    import signal

    from trueno_ublk.devices import records
    require_root()
    dev_id = _live_device(device)
    record = records.load(dev_id)
    if record.state != "live":
        raise UserError(f"/dev/ublkb{dev_id} is {record.state}: upgrade it once it is live")
    if "USER_RECOVERY" not in record.features:
        raise UserError(f"/dev/ublkb{dev_id} was made without user recovery: it cannot be handed over")
    os.kill(record.pid, signal.SIGHUP)
    deadline = time.monotonic() + UPGRADE_WAIT_SECONDS
    while True:
        time.sleep(0.1)
        now = records.load(dev_id)
        if now is None or not record.daemon_alive():
            raise UserError(f"the daemon of /dev/ublkb{dev_id} ended during the upgrade: "
                            f"see {records.log_path(dev_id)} or its service's journal")
        if now.takeovers > record.takeovers and now.state == "live":
            break
        if time.monotonic() > deadline:
            raise UserError(f"/dev/ublkb{dev_id} is still {now.state} after {UPGRADE_WAIT_SECONDS:.0f}s: "
                            f"see {records.log_path(dev_id)} or its service's journal")
    held = "I/O held" if "USER_RECOVERY_REISSUE" in now.features else "I/O failed meanwhile"
    click.echo(f"/dev/ublkb{dev_id}: upgraded in place ({held}); worker {now.worker_pid}")


def _live_device(text: str) -> int:
    from trueno_ublk.devices import records
    dev_id = parse_device(text)
    record = records.load(dev_id)
    if record is None:
        raise UserError(f"no such device: /dev/ublkb{dev_id}")
    if not record.daemon_alive():
        raise UserError(f"the daemon of /dev/ublkb{dev_id} is dead: delete the device")
    return dev_id


@cli.command()
@click.argument("device")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--mm-stat", is_flag=True, help="zram's mm_stat line.")
@click.option("--io-stat", is_flag=True, help="zram's io_stat line.")
@click.option("--bd-stat", is_flag=True, help="zram's bd_stat line: pages on the backing device, read, written.")
def stat(device, as_json, mm_stat, io_stat, bd_stat):
    """Memory and I/O statistics of a device, with zram's meanings."""
    import json

    from trueno_ublk.devices import admin
    from trueno_ublk.observe import stats
    dev_id = _live_device(device)
    reply = admin.request(dev_id, "stat")
    mm, io = reply["mm_stat"], reply["io_stat"]
    io = {**io, "notify_free": mm.pop("notify_free", 0)}
    ratio = stats.compression_ratio(mm) if mm else 0.0
    if mm_stat:
        click.echo(" ".join(str(mm.get(k, 0)) for k in stats.MM_STAT))
    if io_stat:
        click.echo(" ".join(str(io[k]) for k in stats.IO_STAT))
    if bd_stat:
        click.echo(" ".join(str(mm.get(k, 0)) for k in stats.BD_STAT))
    if mm_stat or io_stat or bd_stat:
        return
    features = reply["device"].get("features", [])      # what ADD_DEV negotiated
    policy, tiers = reply.get("policy", {}), stats.tiers(mm) if mm else {}
    if as_json:
        click.echo(json.dumps({"device": f"/dev/ublkb{dev_id}", **mm, **io, "compression_ratio": ratio,
                               "tiers": tiers, "policy": policy, "features": features}, indent=2))
        return
    for key, value in [*mm.items(), *io.items(), ("compression_ratio", ratio),
                       *((f"tier_{name}", f"{t['pages']} pages, {t['bytes']} bytes") for name, t in tiers.items()),
                       *((key.replace("_", "-"), value) for key, value in policy.items()),
                       ("features", ",".join(features) or "-")]:
        click.echo(f"{key:<22} {' '.join(map(str, value)) if isinstance(value, list) else value}")


@cli.command("set")
@click.argument("device")
@click.option("--mem-limit", type=SizeType(), help="New cap on stored data's memory (0: none).")
@click.option("--reset-mem-used-max", is_flag=True, help="Restart mem_used_max from now.")
def set_(device, mem_limit, reset_mem_used_max):
    """Change a running device's limits."""
    if mem_limit is None and not reset_mem_used_max:
        raise UserError("nothing to set: give --mem-limit SIZE or --reset-mem-used-max")
    require_root()
    from trueno_ublk.devices import admin
    admin.request(_live_device(device), "set", mem_limit=mem_limit,
                  reset_mem_used_max=reset_mem_used_max)


@cli.command()
@click.argument("device")
@click.argument("size", type=SizeType())
def resize(device, size):
    """Grow or shrink a live device (Linux 6.16 or newer). It can grow to 16
    times the size it was created with (up to 4 TiB); it shrinks only when no
    page is stored past the new end."""
    _check_size("SIZE", size)
    require_root()
    from trueno_ublk.devices import admin
    dev_id = _live_device(device)
    admin.request(dev_id, "resize", size=size)
    click.echo(f"/dev/ublkb{dev_id}: {format_size(size)}")


@cli.command()
@click.argument("device")
def compact(device):
    """Move stored pages together and give freed memory back."""
    require_root()
    from trueno_ublk.devices import admin
    freed = admin.request(_live_device(device), "compact")["pages_freed"]
    click.echo(f"compacted /dev/ublkb{parse_device(device)}: {freed * 4} KiB given back")


@cli.command()
@click.argument("device")
@click.option("--age", type=DurationType, default=0,
              help="Only pages not read or written for this long (seconds, or 10m, 1h); default: every stored page.")
def idle(device, age):
    """Mark stored pages idle, as zram's idle attribute does; the next access
    clears a page's mark. `recompress --type idle` then takes them."""
    require_root()
    from trueno_ublk.devices import admin
    marked = admin.request(_live_device(device), "idle", age=age)["marked"]
    click.echo(f"/dev/ublkb{parse_device(device)}: {marked} pages marked idle")


@cli.command()
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
    reply = admin.request(_live_device(device), "recompress", kind=kind, algorithm=algorithm,
                          max_pages=max_pages, timeout=None)
    click.echo(f"/dev/ublkb{parse_device(device)}: {reply['pages']} pages recompressed, "
               f"{format_size(reply['saved'])} saved")


@cli.command()
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
    reply = admin.request(_live_device(device), "writeback", kind=kind, max_pages=-(-limit // PAGE_SIZE),
                          timeout=None)
    click.echo(f"/dev/ublkb{parse_device(device)}: {reply['pages']} pages written back "
               f"({format_size(reply['pages'] * PAGE_SIZE)})")


@cli.command("metrics")
def metrics_command():
    """Every device's figures in Prometheus' text format (for a textfile collector)."""
    require_root()
    from trueno_ublk.devices import admin, records
    from trueno_ublk.observe import metrics
    devices = [(f"ublkb{record.dev_id}", admin.live_stat(record)) for record in records.load_all()]
    click.echo(metrics.render(devices), nl=False)


@cli.command()
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


def _config_section(name: str, config_file: str | None):
    from trueno_ublk.systemd import config as device_config
    if not device_config.SECTION.fullmatch(name):
        raise UserError(f"'{name}' is not a config section name: use ublkbN")
    if config_file and not os.path.isfile(config_file):
        raise UserError(f"{config_file}: no such file")
    try:
        return device_config.section_for(name, [config_file] if config_file else None)
    except ValueError as e:
        raise UserError(str(e)) from None


@cli.group("config")
def config_group():
    """Device configuration: /etc/trueno-ublk.conf and /etc/trueno-ublk.conf.d/*.conf."""


@config_group.command("check")
@click.argument("file", required=False)
def config_check(file):
    """Check a config file (default: the installed ones); each problem with its line."""
    from trueno_ublk.systemd import config as device_config
    if file and not os.path.isfile(file):
        raise UserError(f"{file}: no such file")
    paths = [file] if file else device_config.config_files()
    devices, errors = device_config.load_all_errors(paths)
    for error in errors:
        click.echo(f"trueno-ublk: {error}", err=True)
    if errors:
        sys.exit(1)
    where = ", ".join(map(str, paths)) or f"{device_config.main_file()} (absent)"
    click.echo(f"{where}: OK, {len(devices)} device(s)")
    for d in devices:
        use = f"swap, priority {d.swap_priority}" if d.is_swap else f"{d.fs_type} on {d.mount_point}"
        limit = f", mem-limit {format_size(d.mem_limit)}" if d.mem_limit else ""
        click.echo(f"  {d.name}: size {format_size(d.size)} ({d.size_expression}), {d.algorithm}, "
                   f"{d.queues} queue(s){limit}, {use}, options {d.options}; recompress "
                   f"{d.policy.recompress_algorithm} after {d.policy.recompress_after}s, "
                   f"entropy threshold {d.policy.entropy_threshold:g}"
                   + (f"; OTLP to {d.otlp_endpoint} every {d.otlp_interval}s" if d.otlp_endpoint else ""))


def _algorithm_list(text: str, option: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ValueError(f"{option} needs at least one algorithm")
    return [codec_for(name).name for name in names]


REPORT_FORMATS = ("text", "json", "html")


@cli.group(invoke_without_command=True)
@click.option("--data", default="text", show_default=True, metavar="KIND|FILE",
              help="What the devices hold: zero, text, mixed or random pages, or a file of your own "
                   "(repeated over the device).")
@click.option("--size", type=SizeType(), default="256M", show_default=True, help="Size of each device.")
@click.option("--algorithm", "-a", type=AlgorithmType, default="lz4", show_default=True,
              help="trueno-ublk's codec; kernel zram runs the same codec family.")
@click.option("--queues", "-q", type=int, default=1, show_default=True, help="trueno-ublk's hardware queues.")
@click.option("--runtime", type=click.IntRange(1, 3600), default=5, show_default=True,
              help="Seconds each fio run lasts.")
@click.option("--repeats", type=click.IntRange(1, 100), default=3, show_default=True,
              help="fio runs of each workload; the median counts.")
@click.option("--zram/--no-zram", "with_zram", default=True, show_default=True,
              help="Measure kernel zram in the same run, to compare with.")
@click.option("--format", "report_format", type=click.Choice(REPORT_FORMATS), default="text", show_default=True,
              help="text: a table with ratios to zram; json: every figure with its unit; "
                   "html: one self-contained page with charts.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), metavar="FILE",
              help="Write the report to FILE instead of standard output.")
@click.pass_context
def benchmark(ctx, data, size, algorithm, queues, runtime, repeats, with_zram, report_format, output):
    """Measure trueno-ublk on this machine: fio on a scratch device against
    kernel zram (this command), or the page codecs (benchmark codecs)."""
    if ctx.invoked_subcommand:
        given = [p.opts[0] for p in ctx.command.params
                 if ctx.get_parameter_source(p.name) == ParameterSource.COMMANDLINE]
        if given:
            raise UserError(f"{', '.join(given)} belong(s) to the device benchmark, not to "
                            f"'benchmark {ctx.invoked_subcommand}': put options after the subcommand")
        return
    import dataclasses
    import shutil
    import subprocess

    from trueno_ublk.base import limits
    from trueno_ublk.base.control import require_control_device
    from trueno_ublk.benchmark import device, html_report
    from trueno_ublk.benchmark.targets import failure
    _check_size("--size", size)
    if queues not in limits.queues():
        raise UserError(f"--queues must be {limits.queues().describe()}")
    if output and not os.access(os.path.dirname(os.path.abspath(output)), os.W_OK):
        raise UserError(f"cannot write {output}: its directory is missing or not writable")
    try:
        content = device.data_for(data)
    except ValueError as e:
        raise UserError(str(e)) from None
    require_root()
    require_control_device()
    if shutil.which("fio") is None:
        raise UserError("the device benchmark runs fio, which is not installed (e.g. apt install fio)")
    targets = device.default_targets(algorithm, queues)
    if not with_zram:
        targets = [dataclasses.replace(t, baseline=None) for t in targets if t.kind != "zram"]
    runs = len(targets) * len(device.WORKLOADS) * repeats
    with click.progressbar(length=runs, label="fio", file=sys.stderr, show_pos=True,
                           item_show_func=lambda item: item) as bar:
        try:
            doc = device.run(targets, content, size, runtime, repeats,
                             progress=lambda target, workload: bar.update(1, f"{target}: {workload}"))
        except subprocess.CalledProcessError as e:
            raise UserError(f"{e.cmd.split()[0]} failed: {failure(e)}") from None
        except OSError as e:
            raise UserError(f"the benchmark could not go on: {e}") from None
    if not doc["targets"]:
        raise UserError("no device could be measured: " + "; ".join(f"{s['name']}: {s['why']}"
                                                                    for s in doc["skipped"]))
    report = {"text": device.render_text, "json": device.to_json,
              "html": html_report.render}[report_format](doc)
    if output:
        try:
            with open(output, "w") as f:
                f.write(report + ("" if report.endswith("\n") else "\n"))
        except OSError as e:
            raise UserError(f"cannot write {output}: {e.strerror}") from None
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(report)


@benchmark.command("codecs")
@click.option("--data", default="text", show_default=True, metavar="KIND|FILE",
              help="zero, text, mixed or random pages, or a file of your own (its first --size bytes).")
@click.option("--size", type=SizeType(), default="32M", show_default=True, help="Bytes of data to run over.")
@click.option("--algorithms", type=ParsedType("LIST", _algorithm_list), default="lz4,lz4hc,zstd,zstd:6",
              show_default=True, help="Comma-separated algorithms, as --algorithm takes them.")
@click.option("--threads", type=click.IntRange(1, 1024), help="Threads of the second columns (default: every CPU).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (speeds in GiB/s).")
def benchmark_codecs(data, size, algorithms, threads, as_json):
    """Compress and decompress speed of the page codecs, one thread and all."""
    import dataclasses
    import json

    from trueno_ublk.benchmark import codecs as codec_bench
    _check_size("--size", size)
    try:
        what, content = codec_bench.load(data, size)
    except ValueError as e:
        raise UserError(str(e)) from None
    rows = codec_bench.measure(content, algorithms, codec_bench.thread_counts(threads))
    same_fill = codec_bench.same_fill_speed(content)
    if as_json:
        click.echo(json.dumps({"data": what, "bytes": len(content), "page_size": PAGE_SIZE, "unit": "GiB/s",
                               "same_fill_check": same_fill, "codecs": [dataclasses.asdict(r) for r in rows]},
                              indent=2))
    else:
        click.echo(codec_bench.render(what, len(content), rows, same_fill))


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except UserError as e:
        click.echo(f"trueno-ublk: {e}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("trueno-ublk: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        click.echo(f"trueno-ublk: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
