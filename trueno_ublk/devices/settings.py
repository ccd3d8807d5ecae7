"""What a device may be made with: the checks `create` and the config file
share, so that `config check` accepts exactly what `create --from-config`
takes. Each range has its owner in base/limits.py; each problem is told
with the option (or config key) it is about, spelled as the caller spells
it.
"""
from trueno_ublk.base import limits
from trueno_ublk.base.units import PAGE_SIZE, format_size
from trueno_ublk.stores import STORES, store_name

IO_COMMANDS = ("auto", "batch", "per-tag")      # create --io-commands: daemon.supervisor.Supervisor._batch_io
IO_WITHOUT_SERVER = ("auto", "hold", "fail")    # create --io-without-server: daemon.supervisor.recovery_flags


def problems(values: dict, spell=lambda option: f"--{option}") -> list[tuple[str, str]]:
    """(option, message) for each problem of `values`, a device's settings
    by option name (size, queues, queue-threads, depth, huge-threshold,
    io-commands, store, mem-limit, backing-dev, writeback-limit,
    zram-device, zram-entropy); an option left out, or None, is not given.
    `spell(option)` names an option in the messages."""
    found = []

    def given(option):
        return values.get(option) is not None

    def problem(option, message):
        found.append((option, message.format(*(spell(o) for o in (option, *OTHERS.get(option, ()))))))

    if given("size"):
        size = values["size"]
        if size <= 0:
            problem("size", "{} must be greater than 0")
        elif size % PAGE_SIZE:
            problem("size", f"{{}} must be a multiple of 4K ({size} is not)")
        elif size > limits.SIZE.high:
            problem("size", f"{{}} must be at most {format_size(limits.SIZE.high)}")
    for option, allowed in (("queues", limits.queues()), ("queue-threads", limits.queues()),
                            ("depth", limits.DEPTH), ("huge-threshold", limits.HUGE_THRESHOLD)):
        if given(option) and values[option] not in allowed:
            problem(option, f"{{}} must be {allowed.describe()}")
    threads = values.get("queue-threads") or 1
    if given("depth") and values["depth"] < threads:
        problem("depth", f"{{}} {values['depth']} leaves no tag for each of {threads} queue threads")
    if values.get("io-commands") == "batch" and threads > 1:
        problem("io-commands", "{} batch serves each queue from one thread: not with {}")
    store = store_name(values.get("store") or "page")
    for option in ("mem-limit", "backing-dev", "zram-device"):
        if values.get(option) and not STORES[store].holds_memory:
            problem(option, f"{{}} needs a store that holds memory: the {store} store holds none")
    if given("writeback-limit") and not values.get("backing-dev"):
        problem("writeback-limit", "{} goes with {}")
    if given("zram-entropy"):
        if not values.get("zram-device"):
            problem("zram-entropy", "{} goes with {}")
        elif not values["zram-entropy"]:
            problem("zram-entropy", "{} must be above 0 (0 would send no page to zram)")
    return found


# The options a problem of an option names besides it.
OTHERS = {"io-commands": ("queue-threads",), "writeback-limit": ("backing-dev",),
          "zram-entropy": ("zram-device",)}
