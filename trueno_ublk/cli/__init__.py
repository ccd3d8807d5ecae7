"""The trueno-ublk command line: click commands only, a module a group of
them (create; devices: list, stat, top, metrics, delete, upgrade; tune:
set, resize, compact, idle, recompress, writeback; config; benchmark).

Every error a user can cause ends as one line on stderr and a non-zero exit:
UserError for our own checks, click's errors for malformed options.

Each command imports what it uses when it runs: every call pays for its
imports in start-up time (`--help` needs none of the daemon), and in the
test guest each module costs a trip over an emulated 9p share.
"""
import importlib
import sys

import click

from trueno_ublk.base.errors import UserError

# Each command's name: its module here and the click command in it. A
# module is imported when one of its commands runs (or `--help` lists
# them): in a guest, importing the command line took 1.27 s with every
# module, 0.98 s this way.
COMMANDS = {
    "create": ("create", "create"),
    "list": ("devices", "list_devices"),
    "delete": ("devices", "delete"),
    "upgrade": ("devices", "upgrade"),
    "stat": ("devices", "stat"),
    "set": ("tune", "set_"),
    "resize": ("tune", "resize"),
    "compact": ("tune", "compact"),
    "idle": ("tune", "idle"),
    "recompress": ("tune", "recompress"),
    "writeback": ("tune", "writeback"),
    "metrics": ("devices", "metrics_command"),
    "top": ("devices", "top"),
    "config": ("config", "config_group"),
    "benchmark": ("benchmark", "benchmark"),
}


class Commands(click.Group):
    """The top-level group, its commands loaded by name from COMMANDS."""

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attribute = COMMANDS[name]
        return getattr(importlib.import_module(f"trueno_ublk.cli.{module}"), attribute)


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="trueno-ublk")
def cli():
    """A compressed RAM block device served from user space over ublk."""


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

