"""The trueno-ublk command line: click commands only, a module a group of
them (create; devices: list, stat, top, metrics, delete, upgrade; tune:
set, resize, compact, idle, recompress, writeback; config; benchmark).

Every error a user can cause ends as one line on stderr and a non-zero exit:
UserError for our own checks, click's errors for malformed options.

Each command imports what it uses when it runs: every call pays for its
imports in start-up time (`--help` needs none of the daemon), and in the
test guest each module costs a trip over an emulated 9p share.
"""
import sys

import click

from trueno_ublk.base.errors import UserError
from trueno_ublk.cli import benchmark, config, create, devices, tune


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="trueno-ublk")
def cli():
    """A compressed RAM block device served from user space over ublk."""


for command in (create.create, devices.list_devices, devices.delete, devices.upgrade, devices.stat,
                tune.set_, tune.resize, tune.compact, tune.idle, tune.recompress, tune.writeback,
                devices.metrics_command, devices.top, config.config_group, benchmark.benchmark):
    cli.add_command(command)


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

