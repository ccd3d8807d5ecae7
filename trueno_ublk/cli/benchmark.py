"""`benchmark`: fio on scratch devices against kernel zram, and the page
codecs alone (`benchmark codecs`)."""
import os
import sys

import click
from click.core import ParameterSource

from trueno_ublk.base.codecs import codec_for
from trueno_ublk.base.errors import UserError
from trueno_ublk.base.units import PAGE_SIZE
from trueno_ublk.cli.options import AlgorithmType, ParsedType, SizeType, check_size, require_root


def _algorithm_list(text: str, option: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ValueError(f"{option} needs at least one algorithm")
    return [codec_for(name).name for name in names]


REPORT_FORMATS = ("text", "json", "html")


@click.group(invoke_without_command=True)
@click.option("--data", default="text", show_default=True, metavar="KIND|FILE",
              help="What the devices hold: zero, text, mixed or random pages, or a file of your own "
                   "(repeated over the device).")
@click.option("--size", type=SizeType(), default="256M", show_default=True, help="Size of each device.")
@click.option("--algorithm", "-a", type=AlgorithmType, default="lz4", show_default=True,
              help="trueno-ublk's codec; kernel zram runs the same codec family.")
@click.option("--queues", "-q", type=int, default=1, show_default=True, help="trueno-ublk's hardware queues.")
@click.option("--runtime", type=click.IntRange(1, 3600), default=5, show_default=True,
              help="Seconds each fio run measures, after a fifth as long to warm up.")
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
    check_size("--size", size)
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
    check_size("--size", size)
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

