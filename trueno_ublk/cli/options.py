"""What the commands share: option types whose bad values become click's
one-line usage errors, and the naming and checking of devices."""
import os
import re

import click

from trueno_ublk.base.codecs import codec_for
from trueno_ublk.base.errors import UserError
from trueno_ublk.base.units import parse_size
from trueno_ublk.stores.policy import parse_duration, parse_entropy, recompress_codec


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
EntropyType = ParsedType("BITS", parse_entropy)


def check_size(name: str, size: int) -> None:
    from trueno_ublk.devices.settings import problems
    for _, message in problems({"size": size}, spell=lambda _: name)[:1]:
        raise UserError(message)


def require_root() -> None:
    if os.geteuid() != 0:
        raise UserError("this command needs root: run it with sudo")


def parse_device(text: str) -> int:
    """A device as users name it: /dev/ublkb0, ublkb0 or 0."""
    m = re.fullmatch(r"(?:/dev/)?(?:ublkb)?(\d+)", text.strip())
    if not m:
        raise UserError(f"'{text}' is not a ublk device (examples: /dev/ublkb0, ublkb0, 0)")
    return int(m.group(1))


def live_device(text: str) -> int:
    """The id of the device `text` names, whose daemon must be alive."""
    from trueno_ublk.devices import records
    dev_id = parse_device(text)
    record = records.load(dev_id)
    if record is None:
        raise UserError(f"no such device: /dev/ublkb{dev_id}")
    if not record.daemon_alive():
        raise UserError(f"the daemon of /dev/ublkb{dev_id} is dead: delete the device")
    return dev_id
