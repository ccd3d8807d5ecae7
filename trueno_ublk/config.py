"""Device configuration files, in zram-generator's style.

/etc/trueno-ublk.conf, then /etc/trueno-ublk.conf.d/*.conf in name order
(a later file's key overrides an earlier one's), one section per device:

    [ublkb0]
    size = min(ram / 2, 4096)       # MiB; an expression over ram (MiB)
    algorithm = zstd
    swap-priority = 100

Every error names its file and line.
"""
import ast
import dataclasses
import operator
import os
import re
from pathlib import Path

import psutil

from trueno_ublk.codecs import codec_for
from trueno_ublk.units import PAGE_SIZE, parse_size

MAIN_FILE = Path(os.environ.get("TRUENO_UBLK_CONFIG", "/etc/trueno-ublk.conf"))
DEFAULT_SIZE = "min(ram / 2, 4096)"
SECTION = re.compile(r"ublkb(\d+)")


class ConfigError(ValueError):
    """One problem in a config file, at a line."""

    def __init__(self, path, line: int, message: str):
        super().__init__(f"{path}:{line}: {message}")


@dataclasses.dataclass
class DeviceSection:
    name: str
    dev_id: int
    size_expression: str = DEFAULT_SIZE
    size: int = 0                       # bytes, from the expression
    algorithm: str = "lz4"
    queues: int = 1
    mem_limit: int = 0
    swap_priority: int = 100
    fs_type: str = ""                   # empty: the device is swap
    mount_point: str = ""
    options: str = "discard"

    @property
    def is_swap(self) -> bool:
        return not self.fs_type


def evaluate_size(expression: str, ram_mib: float) -> float:
    """A size expression over `ram` (MiB), in MiB: numbers, ram, + - * / //
    %, parentheses, min() and max(). Never eval: a whitelist over the AST."""
    binary = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
              ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
    functions = {"min": min, "max": max}

    def value(node):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.Name) and node.id == "ram":
            return ram_mib
        if isinstance(node, ast.BinOp) and type(node.op) in binary:
            return binary[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            return -value(node.operand) if isinstance(node.op, ast.USub) else value(node.operand)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in functions and node.args and not node.keywords):
            return functions[node.func.id](*(value(a) for a in node.args))
        raise ValueError(f"'{ast.unparse(node)}' is not allowed in a size "
                         "(use numbers, ram, + - * / //, min(), max())")

    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise ValueError(f"'{expression}' is not a size expression") from None
    try:
        return float(value(tree.body))
    except ZeroDivisionError:
        raise ValueError(f"'{expression}' divides by zero") from None


def ram_mib() -> float:
    return psutil.virtual_memory().total / (1 << 20)


def config_files(main: Path = MAIN_FILE) -> list[Path]:
    drop_ins = main.with_name(main.name + ".d")
    found = sorted(drop_ins.glob("*.conf")) if drop_ins.is_dir() else []
    return ([main] if main.exists() else []) + found


def _parse_file(path: Path, raw: dict, errors: list, bad: set) -> None:
    """Sections and keys of one file into raw[section][key] = (value, path,
    line); each problem into `errors`, its section into `bad`."""
    section = None
    seen = set()
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        errors.append(ConfigError(path, 0, f"cannot read: {getattr(e, 'strerror', None) or e}"))
        return
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line[1:-1].strip() if line.endswith("]") else ""
            if not SECTION.fullmatch(section):
                errors.append(ConfigError(path, number, f"bad section {line}: use [ublkbN]"))
                section = None
                continue
            raw.setdefault(section, {})
            continue
        key, eq, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if section is None:
            errors.append(ConfigError(path, number, f"'{key}' is outside any [ublkbN] section"))
        elif not eq or not key:
            errors.append(ConfigError(path, number, f"expected 'key = value', got '{line}'"))
            bad.add(section)
        elif (section, key) in seen:
            errors.append(ConfigError(path, number, f"'{key}' is set twice in [{section}]"))
            bad.add(section)
        else:
            seen.add((section, key))
            raw[section][key] = (value, path, number)


def _whole(value: str, low: int, high: int, what: str) -> int:
    if not re.fullmatch(r"-?\d+", value) or not low <= int(value) <= high:
        raise ValueError(f"{what} must be a whole number from {low} to {high}, not '{value}'")
    return int(value)


def _apply(dev: DeviceSection, key: str, value: str, ram: float) -> None:
    if key == "size":
        mib = evaluate_size(value, ram)
        size = int(mib * (1 << 20)) // PAGE_SIZE * PAGE_SIZE
        if size <= 0:
            raise ValueError(f"size '{value}' comes to {mib:g} MiB: it must be at least 4K")
        dev.size_expression, dev.size = value, size
    elif key == "algorithm":
        dev.algorithm = codec_for(value).name
    elif key == "queues":
        dev.queues = _whole(value, 1, os.cpu_count() or 1, "queues")
    elif key == "mem-limit":
        dev.mem_limit = parse_size(value) if value != "0" else 0
    elif key == "swap-priority":
        dev.swap_priority = _whole(value, -1, 32767, "swap-priority")
    elif key == "fs-type":
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", value):
            raise ValueError(f"'{value}' is not a filesystem type")
        dev.fs_type = value
    elif key == "mount-point":
        if not value.startswith("/") or "\n" in value:
            raise ValueError(f"mount-point must be an absolute path, not '{value}'")
        dev.mount_point = os.path.normpath(value)
    elif key == "options":
        dev.options = value
    else:
        raise ValueError(f"unknown key '{key}'")


def load(paths: list[Path] | None = None, ram: float | None = None) -> list[DeviceSection]:
    """Every configured device, in id order. Raises ConfigError (the first
    problem, with file and line)."""
    devices, errors = load_all_errors(paths, ram)
    if errors:
        raise errors[0]
    return devices


def load_all_errors(paths: list[Path] | None = None, ram: float | None = None):
    """(devices that are fine, every ConfigError found): `config check` and
    the generator report all problems and keep the good devices."""
    paths = config_files() if paths is None else paths
    ram = ram_mib() if ram is None else ram
    raw: dict[str, dict] = {}
    errors = []
    bad_sections = set()
    for path in paths:
        _parse_file(Path(path), raw, errors, bad_sections)
    devices = []
    for name in sorted(raw, key=lambda n: int(SECTION.fullmatch(n).group(1))):
        dev = DeviceSection(name=name, dev_id=int(SECTION.fullmatch(name).group(1)))
        bad = name in bad_sections
        keys = raw[name]
        for key, (value, path, line) in keys.items():
            try:
                _apply(dev, key, value, ram)
            except ValueError as e:
                errors.append(ConfigError(path, line, f"{e} in [{name}]"))
                bad = True
        if "size" not in keys:
            _apply(dev, "size", DEFAULT_SIZE, ram)
        if dev.fs_type and not dev.mount_point:
            path, line = keys["fs-type"][1:]
            errors.append(ConfigError(path, line, f"[{name}] has fs-type but no mount-point"))
            bad = True
        if dev.mount_point and not dev.fs_type:
            path, line = keys["mount-point"][1:]
            errors.append(ConfigError(path, line, f"[{name}] has mount-point but no fs-type"))
            bad = True
        if not bad:
            devices.append(dev)
    return devices, errors


def section_for(name: str, paths: list[Path] | None = None) -> DeviceSection:
    """The section `name` (e.g. ublkb0) from the config; ValueError if absent."""
    for dev in load(paths):
        if dev.name == name:
            return dev
    where = ", ".join(map(str, config_files() if paths is None else paths)) or str(MAIN_FILE)
    raise ValueError(f"no [{name}] section in {where}")
