"""`create`: a new device, served by a daemon detached into the background
(or in this process, under systemd), its options checked first -- by the
checks the config file shares (devices/settings.py) -- and completed from
a config section (--from-config)."""
import functools
import operator
import os

import click
from click.core import ParameterSource

from trueno_ublk.base.errors import UserError
from trueno_ublk.base.units import format_size
from trueno_ublk.cli import options
from trueno_ublk.cli.options import (
    AlgorithmType,
    DurationType,
    EntropyType,
    ParsedType,
    RecompressAlgorithmType,
    SizeType,
)
from trueno_ublk.devices.settings import IO_COMMANDS, IO_WITHOUT_SERVER
from trueno_ublk.stores import DEFAULT_HUGE_THRESHOLD, DEFAULT_STORE, STORES, store_name
from trueno_ublk.stores.policy import (
    DEFAULT_ENTROPY_THRESHOLD,
    DEFAULT_RECOMPRESS_AFTER,
    DEFAULT_RECOMPRESS_ALGORITHM,
    DEFAULT_WRITEBACK_AFTER,
    DEFAULT_ZRAM_ENTROPY,
)


def _otlp_interval(text, what):
    from trueno_ublk.observe.otlp import parse_interval
    return parse_interval(text, what)


# create's options that a config section gives (--from-config), and where
# in the section (config.DeviceSection) each is.
FROM_CONFIG = {
    "size": "size", "algorithm": "algorithm", "queues": "queues", "mem_limit": "mem_limit", "dev_id": "dev_id",
    "recompress_algorithm": "policy.recompress_algorithm", "recompress_after": "policy.recompress_after",
    "entropy_threshold": "policy.entropy_threshold", "writeback_after": "policy.writeback_after",
    "backing_dev": "backing_dev", "writeback_limit": "writeback_limit",
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


@click.command()
@click.option("--size", "-s", type=SizeType(),
              help="Device size (uncompressed), e.g. 8G; a multiple of 4K.")
@click.option("--algorithm", "-a", type=AlgorithmType, default="lz4", show_default=True,
              help="lz4, lz4hc, zstd, zstd:LEVEL or none.")
@click.option("--store", type=ParsedType("STORE", lambda text, _: store_name(text)), default=DEFAULT_STORE,
              show_default=True, help="Where pages live: " + "; ".join(f"{name}, {kind.description}"
                                                                        for name, kind in STORES.items()) + ".")
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
              help="Cap on memory for stored data (0: none); beyond it, pages go to --backing-dev if "
                   "there is one, and writes fail if not.")
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
@click.option("--zram-device", metavar="PATH", default="",
              help="Keep pages in this kernel zram device (/dev/zramN, its disksize set, at least --size) "
                   "instead of the page store: those --zram-entropy picks.")
@click.option("--zram-entropy", type=EntropyType, default=None,
              help=f"With --zram-device: pages with fewer bits of entropy a byte than this go to zram, the "
                   f"rest stay in the page store (default {DEFAULT_ZRAM_ENTROPY:g}: every page).")
@click.option("--recovery/--no-recovery", default=True, show_default=True,
              help="If the I/O worker dies, serve the device on with a new one, every page kept.")
@click.option("--io-without-server", type=click.Choice(IO_WITHOUT_SERVER), default="auto", show_default=True,
              help="While no daemon serves the device (between a dead one and the next): hold its I/O "
                   "for the next, or fail it (Linux 6.13+); auto holds it where systemd keeps the pages "
                   "for the next daemon (or the kernel cannot fail it) and fails it elsewhere, where "
                   "nothing would come.")
@click.option("--from-config", metavar="NAME",
              help="Take the options from section [NAME] (ublkbN) of the config; options given here win.")
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
           zram_device, zram_entropy, recovery, io_without_server, from_config, config_file,
           metrics_listen, otlp_endpoint, otlp_interval, foreground, format_command):
    """Create a device; prints its path once it is live."""
    if size is None:
        raise UserError("missing --size (e.g. --size 8G), or --from-config NAME")
    from trueno_ublk.base import limits
    from trueno_ublk.devices.settings import problems
    for _, message in problems({"size": size, "queues": queues, "queue-threads": queue_threads, "depth": depth,
                                "huge-threshold": huge_threshold, "io-commands": io_commands, "store": store,
                                "mem-limit": mem_limit, "backing-dev": backing_dev,
                                "writeback-limit": writeback_limit, "zram-device": zram_device,
                                "zram-entropy": zram_entropy})[:1]:
        raise UserError(message)
    if dev_id != -1 and dev_id not in limits.DEVICE_ID:
        raise UserError(f"--id must be {limits.DEVICE_ID.describe()}")
    from trueno_ublk.base import control
    from trueno_ublk.base.logs import configure_logging
    from trueno_ublk.daemon import detach
    from trueno_ublk.daemon.supervisor import DeviceConfig, Supervisor
    from trueno_ublk.daemon.takeover import kept_device
    from trueno_ublk.devices import records
    from trueno_ublk.devices.teardown import delete_device
    from trueno_ublk.observe import metrics
    from trueno_ublk.stores.backing import BackingError, open_backing, open_zram
    from trueno_ublk.stores.policy import Policy
    try:
        if backing_dev:
            os.close(open_backing(backing_dev)[0])      # the worker opens it for itself
        if zram_device:
            fd, zram_size, _ = open_zram(zram_device)
            os.close(fd)                                # the worker opens it for itself
            if zram_size < size:
                raise UserError(f"--zram-device {zram_device} holds {format_size(zram_size)}, "
                                f"less than --size {format_size(size)}")
    except BackingError as e:
        raise UserError(str(e)) from None
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
    options.require_root()
    control.require_control_device()
    stale = records.load(dev_id) if dev_id >= 0 else None
    takeover = kept_device(dev_id, stale, lambda line: click.echo(f"trueno-ublk: {line}", err=True)) \
        if foreground else None
    if takeover is None and stale is not None and not stale.daemon_alive():
        delete_device(dev_id, force=False)      # left by a daemon that died, its pages with it
    config = DeviceConfig(size=size, algorithm=algorithm, store=store, queues=queues,
                          queue_threads=queue_threads, io_commands=io_commands, depth=depth,
                          dev_id=dev_id, mem_limit=mem_limit,
                          huge_threshold=huge_threshold, recovery=recovery, io_without_server=io_without_server,
                          policy=Policy(recompress_algorithm, recompress_after, entropy_threshold,
                                        writeback_after),
                          backing_dev=backing_dev, writeback_limit=writeback_limit,
                          zram_device=zram_device,
                          zram_entropy=DEFAULT_ZRAM_ENTROPY if zram_entropy is None else zram_entropy,
                          metrics_listen=metrics_listen, otlp_endpoint=otlp_endpoint, otlp_interval=otlp_interval,
                          format_command=format_command)
    if foreground:
        configure_logging()
        Supervisor(config, on_live=lambda n: click.echo(f"/dev/ublkb{n}"), takeover=takeover).run()
    else:
        click.echo(f"/dev/ublkb{detach.spawn_detached(config)}")



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

