"""The command line's tree of commands, walked as running it would load
them (the top-level group loads its commands by name)."""
import click


def subcommands(group: click.Group) -> dict:
    """A group's commands by name."""
    ctx = click.Context(group)
    return {name: group.get_command(ctx, name) for name in group.list_commands(ctx)}


def walk(command: click.Command, path: tuple = ()):
    """(path, command) for the command and everything under it; path is the
    words after `trueno-ublk`, () for the command itself."""
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(subcommands(command).items()):
            yield from walk(sub, (*path, name))
