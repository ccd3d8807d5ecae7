"""Device configuration files, in zram-generator's style.

/etc/trueno-ublk.conf, then /etc/trueno-ublk.conf.d/*.conf in name order
(a later file's key overrides an earlier one's), one section per device:

    [ublkb0]
    size = min(ram / 2, 4096)       # MiB; an expression over ram (MiB)
    algorithm = zstd
    swap-priority = 100
    recompress-after = 10m          # the cold-page policy (stores/policy.py)
    otlp-endpoint = http://127.0.0.1:4318   # OTLP export of the metrics (observe/otlp.py)

Comments start a line with # or ;, or follow whitespace after a value.
$TRUENO_UBLK_CONFIG names another main file (its drop-ins: the same name
plus ".d"). Every error names its file and line; a device with an error is
left out, the others stay usable.
"""
import ast
import dataclasses
import math
import operator
import os
import re
from pathlib import Path

from trueno_ublk.base import limits, procfs
from trueno_ublk.base.codecs import codec_for
from trueno_ublk.base.units import PAGE_SIZE, format_size, parse_size
from trueno_ublk.devices.settings import problems as settings_problems
from trueno_ublk.stores.policy import Policy, parse_duration, parse_entropy, recompress_codec

DEFAULT_MAIN_FILE = Path("/etc/trueno-ublk.conf")
CONFIG_ENV = "TRUENO_UBLK_CONFIG"
DEFAULT_SIZE = "min(ram / 2, 4096)"
SECTION = re.compile(r"ublkb(0|[1-9]\d*)")     # one spelling per device: no ublkb01
SWAP_PRIORITY = limits.Range(-1, 32767)    # swapon(8): -1 lets the kernel choose
INLINE_COMMENT = re.compile(r"\s[#;].*$")
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


class ConfigError(ValueError):
    """One problem in a config file, at a line (0: the file as a whole).
    `section` is the device it spoils, None if it spoils none in particular."""

    def __init__(self, path, line: int, message: str, section: str | None = None):
        super().__init__(f"{path}:{line}: {message}" if line else f"{path}: {message}")
        self.path, self.line, self.section = Path(path), line, section


MKSWAP = "/sbin/mkswap"
MKFS = "/sbin/mkfs"


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
    policy: Policy = Policy()           # recompress-algorithm, recompress-after, entropy-threshold
    otlp_endpoint: str = ""             # otlp-endpoint: OTLP export (observe/otlp.py); empty: off
    otlp_interval: int = 60
    backing_dev: str = ""               # writeback-device (zram-generator's name); empty: none
    writeback_limit: int | None = None  # writeback-limit, bytes; None: no limit
    zram_device: str = ""               # zram-device: the zram tier's device; empty: none
    zram_entropy: float | None = None   # zram-entropy, bits a byte; None: policy.DEFAULT_ZRAM_ENTROPY

    @property
    def is_swap(self) -> bool:
        return not self.fs_type

    @property
    def format_command(self) -> tuple[str, ...]:
        """What makes a new device usable: mkswap, or mkfs of its type."""
        node = f"/dev/{self.name}"
        return (MKSWAP, node) if self.is_swap else (MKFS, "-t", self.fs_type, node)


# --- size expressions ------------------------------------------------------

_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
              ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv}
_FUNCTIONS = {"min": min, "max": max}
_ALLOWED = "use numbers, ram, + - * / //, parentheses, min(), max()"


def _shown(text: str, limit: int = 60) -> str:
    """`text` quoted in a message, cut short: an error stays one readable line."""
    return f"'{text}'" if len(text) <= limit else f"'{text[:limit - 3]}...'"


def evaluate_size(expression: str, ram_mib: float) -> float:
    """A size expression over `ram` (MiB), in MiB. Never eval: the parsed
    tree is walked with a whitelist of node types. ValueError otherwise."""

    def value(node):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.Name) and node.id == "ram":
            return ram_mib
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = value(node.operand)
            return -operand if isinstance(node.op, ast.USub) else operand
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in _FUNCTIONS and node.args and not node.keywords
                and not any(isinstance(a, ast.Starred) for a in node.args)):
            return _FUNCTIONS[node.func.id]([value(a) for a in node.args])
        raise ValueError(f"{_shown(ast.unparse(node))} is not allowed in a size ({_ALLOWED})")

    try:
        tree = ast.parse(expression.strip(), mode="eval")
        result = float(value(tree.body))
    except (SyntaxError, RecursionError, MemoryError):
        # MemoryError / RecursionError: absurdly nested input, which the
        # parser or the walk cannot take; it is no size either way.
        raise ValueError(f"{_shown(expression)} is not a size expression ({_ALLOWED})") from None
    except ZeroDivisionError:
        raise ValueError(f"{_shown(expression)} divides by zero") from None
    except OverflowError:
        raise ValueError(f"{_shown(expression)} is too large") from None
    if not math.isfinite(result):
        raise ValueError(f"{_shown(expression)} is too large")
    return result


def ram_mib() -> float:
    return procfs.total_ram_bytes() / (1 << 20)


# --- files -------------------------------------------------------------------

def main_file() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_MAIN_FILE)


def config_files(main: Path | None = None) -> list[Path]:
    """The main file (if it exists), then its drop-ins in name order."""
    main = Path(main) if main is not None else main_file()
    drop_ins = main.with_name(main.name + ".d")
    found = sorted(p for p in drop_ins.glob("*.conf") if p.is_file()) if drop_ins.is_dir() else []
    return ([main] if main.is_file() else []) + found


def _parse_file(path: Path, raw: dict, errors: list) -> None:
    """Sections and keys of one file into raw[section][key] = (value, path,
    line); each problem into `errors`."""
    section = None
    in_bad_section = False          # its keys are skipped: the header was reported
    seen = set()                    # (section, key) within this file
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        errors.append(ConfigError(path, 0, f"cannot read: {getattr(e, 'strerror', None) or e}"))
        return
    for number, line in enumerate(text.splitlines(), 1):
        line = INLINE_COMMENT.sub("", line).strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            name = line[1:-1].strip() if line.endswith("]") else ""
            match = SECTION.fullmatch(name)
            in_bad_section = not match or int(match.group(1)) not in limits.DEVICE_ID
            if in_bad_section:
                errors.append(ConfigError(path, number, f"bad section {line}: use [ublkbN], "
                                                        f"N from 0 to {limits.DEVICE_ID.high}"))
            section = None if in_bad_section else name
            if section:
                raw.setdefault(section, {})
            continue
        key, eq, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if in_bad_section:
            continue
        if section is None:
            errors.append(ConfigError(path, number, f"{_shown(key)} is outside any [ublkbN] section"))
        elif not eq or not key:
            errors.append(ConfigError(path, number, f"expected 'key = value', got {_shown(line)}", section))
        elif (section, key) in seen:
            errors.append(ConfigError(path, number, f"'{key}' is set twice in [{section}]", section))
        else:
            seen.add((section, key))
            raw[section][key] = (value, path, number)


# --- keys --------------------------------------------------------------------

def _whole(value: str, allowed: limits.Range, what: str) -> int:
    if not re.fullmatch(r"[-+]?\d+", value) or int(value) not in allowed:
        note = f" ({allowed.why})" if allowed.why else ""
        raise ValueError(f"{what} must be a whole number from {allowed.low} to {allowed.high}{note}, "
                         f"not {_shown(value)}")
    return int(value)


def _size(value: str, ram: float) -> int:
    mib = evaluate_size(value, ram)
    size = int(mib * (1 << 20)) // PAGE_SIZE * PAGE_SIZE        # whole pages, rounded down
    if size <= 0:
        raise ValueError(f"size {_shown(value)} comes to {mib:g} MiB: it must be at least 4K")
    if size > limits.SIZE.high:
        raise ValueError(f"size {_shown(value)} comes to {mib:g} MiB: it must be at most "
                         f"{format_size(limits.SIZE.high)} ({limits.SIZE.why})")
    return size


def _mount_point(value: str) -> str:
    if not value.startswith("/") or CONTROL_CHARS.search(value):
        raise ValueError(f"mount-point must be an absolute path, not {_shown(value)}")
    path = "/" + os.path.normpath(value).lstrip("/")    # normpath keeps a leading //
    if path == "/":
        raise ValueError("mount-point cannot be / itself")
    return path


def _apply(dev: DeviceSection, key: str, value: str, ram: float) -> None:
    """Set `key` of `dev` from its text; ValueError saying what is wrong."""
    if key == "size":
        dev.size_expression, dev.size = value, _size(value, ram)
    elif key == "algorithm":
        dev.algorithm = codec_for(value).name
    elif key == "queues":
        dev.queues = _whole(value, limits.queues(), "queues")
    elif key == "mem-limit":
        dev.mem_limit = parse_size(value)
    elif key == "swap-priority":
        dev.swap_priority = _whole(value, SWAP_PRIORITY, "swap-priority")
    elif key == "fs-type":
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", value):
            raise ValueError(f"{_shown(value)} is not a filesystem type")
        dev.fs_type = "" if value == "swap" else value      # zram-generator: swap is a type too
    elif key == "mount-point":
        dev.mount_point = _mount_point(value)
    elif key == "recompress-algorithm":
        dev.policy = dataclasses.replace(dev.policy, recompress_algorithm=recompress_codec(value).name)
    elif key == "recompress-after":
        dev.policy = dataclasses.replace(dev.policy, recompress_after=parse_duration(value, "recompress-after"))
    elif key == "entropy-threshold":
        dev.policy = dataclasses.replace(dev.policy, entropy_threshold=parse_entropy(value))
    elif key == "writeback-device":
        if not value.startswith("/") or CONTROL_CHARS.search(value):
            raise ValueError(f"writeback-device must be an absolute path, not {_shown(value)}")
        dev.backing_dev = value
    elif key == "writeback-after":
        dev.policy = dataclasses.replace(dev.policy, writeback_after=parse_duration(value, "writeback-after"))
    elif key == "writeback-limit":
        dev.writeback_limit = parse_size(value)
    elif key == "zram-device":
        if not value.startswith("/dev/") or CONTROL_CHARS.search(value):
            raise ValueError(f"zram-device must be a device path like /dev/zram0, not {_shown(value)}")
        dev.zram_device = value
    elif key == "zram-entropy":
        dev.zram_entropy = parse_entropy(value, "zram-entropy")
    elif key == "otlp-endpoint":
        from trueno_ublk.observe.otlp import metrics_url
        try:
            metrics_url(value)
        except ValueError as e:
            raise ValueError(f"otlp-endpoint: {e}") from None
        dev.otlp_endpoint = value
    elif key == "otlp-interval":
        from trueno_ublk.observe.otlp import parse_interval
        dev.otlp_interval = parse_interval(value)
    elif key == "options":
        if not value or CONTROL_CHARS.search(value):
            raise ValueError("options must be a non-empty list like discard,noatime, "
                             f"not {_shown(value)}")
        dev.options = value
    else:
        raise ValueError(f"unknown key {_shown(key)}")


def _key(option: str) -> str:
    """The config key of a `create` option."""
    return {"backing-dev": "writeback-device"}.get(option, option)


def _check_device(dev: DeviceSection, keys: dict, mount_points: dict) -> list[tuple]:
    """Problems between the keys of one device, and with mount points
    other devices took, as (path, line, message)."""
    settings = {"size": dev.size, "queues": dev.queues, "mem-limit": dev.mem_limit, "backing-dev": dev.backing_dev,
                "writeback-limit": dev.writeback_limit, "zram-device": dev.zram_device,
                "zram-entropy": dev.zram_entropy}
    problems = [(*keys[_key(option)][1:], f"{message} in [{dev.name}]")
                for option, message in settings_problems(settings, spell=_key)]
    if dev.fs_type and not dev.mount_point:
        problems.append((*keys["fs-type"][1:], f"[{dev.name}] has fs-type {dev.fs_type} "
                                               "but no mount-point"))
    if dev.mount_point and not dev.fs_type:
        problems.append((*keys["mount-point"][1:], f"[{dev.name}] has a mount-point but no "
                                                   "filesystem fs-type (swap takes none)"))
    if dev.mount_point and dev.fs_type:
        other = mount_points.setdefault(dev.mount_point, dev.name)
        if other != dev.name:
            problems.append((*keys["mount-point"][1:], f"mount-point {dev.mount_point} "
                                                       f"is already [{other}]'s"))
    return problems


# --- loading -----------------------------------------------------------------

def load_all_errors(paths: list[Path] | None = None, ram: float | None = None):
    """(devices that are fine in id order, every ConfigError found):
    `config check` and the generator report all problems and keep the
    good devices."""
    paths = config_files() if paths is None else paths
    ram = ram_mib() if ram is None else ram
    raw: dict[str, dict] = {}
    errors: list[ConfigError] = []
    for path in paths:
        _parse_file(Path(path), raw, errors)
    devices = []
    mount_points: dict[str, str] = {}
    for name in sorted(raw, key=lambda n: int(SECTION.fullmatch(n).group(1))):
        dev = DeviceSection(name=name, dev_id=int(SECTION.fullmatch(name).group(1)))
        keys = raw[name]
        if "size" not in keys:
            _apply(dev, "size", DEFAULT_SIZE, ram)
        found = []
        for key, (value, path, line) in keys.items():
            try:
                _apply(dev, key, value, ram)
            except ValueError as e:
                # "unknown algorithm 'lzo' in [ublkb0]: valid ones are ..."
                what, colon, detail = str(e).partition(": ")
                found.append(ConfigError(path, line, f"{what} in [{name}]{colon}{detail}", name))
        if not found:
            found = [ConfigError(path, line, message, name)
                     for path, line, message in _check_device(dev, keys, mount_points)]
        errors += found
        if not any(e.section == name for e in errors):
            devices.append(dev)
    file_order = {Path(p): i for i, p in enumerate(paths)}
    errors.sort(key=lambda e: (file_order.get(e.path, len(file_order)), e.line))    # reading order
    return devices, errors


def load(paths: list[Path] | None = None, ram: float | None = None) -> list[DeviceSection]:
    """Every configured device, in id order. Raises the first ConfigError."""
    devices, errors = load_all_errors(paths, ram)
    if errors:
        raise errors[0]
    return devices


def section_for(name: str, paths: list[Path] | None = None,
                ram: float | None = None) -> DeviceSection:
    """Device `name` (e.g. ublkb0) as the generator sees it: usable when its
    own keys are fine, whatever is wrong elsewhere. ValueError otherwise,
    the first problem with its line."""
    paths = config_files() if paths is None else paths
    devices, errors = load_all_errors(paths, ram)
    for dev in devices:
        if dev.name == name:
            return dev
    for error in errors:
        if error.section == name:
            raise error
    where = ", ".join(map(str, paths)) or f"{main_file()} (which does not exist)"
    raise ValueError(f"no [{name}] section in {where}")
