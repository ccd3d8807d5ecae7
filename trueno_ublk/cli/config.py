"""`config check`: the config files, each problem with its line."""
import os
import sys

import click

from trueno_ublk.base.errors import UserError
from trueno_ublk.base.units import format_size


@click.group("config")
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

