"""The page codec as a library (trueno_ublk.base.pagecodec) and `benchmark codecs`."""
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from trueno_ublk.base.pagecodec import PageCodec, is_same_filled
from trueno_ublk.benchmark import codecs as benchmark
from trueno_ublk.cli import cli

from one_line_error import assert_one_line_error

CLI = str(Path(sys.executable).with_name("trueno-ublk"))

PAGE = 4096
TEXT = benchmark.generate("text", 64 * PAGE)
RANDOM_PAGE = random.Random(7).randbytes(PAGE)


@pytest.mark.parametrize("algorithm", ["lz4", "lz4hc", "zstd", "zstd:6", "zstd:19"])
def test_every_codec_round_trips_one_page_and_batches_across_threads(algorithm):
    codec = PageCodec(algorithm)
    payload = codec.compress(TEXT[:PAGE])
    assert payload is not None and len(payload) < PAGE // 2
    assert codec.decompress(payload) == TEXT[:PAGE]
    data = TEXT + RANDOM_PAGE + bytes(PAGE)
    one = codec.compress_pages(data)
    assert codec.compress_pages(data, threads=3) == one      # the same payloads, whatever the split
    assert one[64] is None                                    # random: not below a page
    assert codec.decompress_pages(one, data, threads=3) == data
    assert codec.decompress_pages(one, data) == data


def test_none_stores_every_page_as_it_is():
    codec = PageCodec("none")
    assert codec.compress(TEXT[:PAGE]) is None
    assert codec.decompress_pages([None, None], TEXT[:2 * PAGE]) == TEXT[:2 * PAGE]


def test_same_filled_pages_are_found():
    assert is_same_filled(bytes(PAGE))
    assert is_same_filled(b"\x01\x02\x03\x04\x05\x06\x07\x08" * (PAGE // 8))
    assert not is_same_filled(TEXT[:PAGE])
    assert not is_same_filled(bytes(PAGE - 1) + b"\x01")
    with pytest.raises(ValueError, match="a page is 4096 bytes"):
        is_same_filled(bytes(100))


def test_bad_input_is_refused_with_a_clear_error():
    codec = PageCodec("zstd")
    with pytest.raises(ValueError, match="not a whole number"):
        codec.compress_pages(bytes(PAGE + 1))
    with pytest.raises(ValueError, match="a payload is 1 to"):
        codec.decompress(b"")
    with pytest.raises(ValueError, match="is not zstd"):
        codec.decompress(b"not a zstd frame")
    with pytest.raises(ValueError, match="needs `pages`"):
        codec.decompress_pages([None])
    with pytest.raises(ValueError, match="an empty payload"):
        codec.decompress_pages([b"", None], bytes(2 * PAGE))
    payloads = codec.compress_pages(TEXT[:2 * PAGE])
    with pytest.raises(ValueError, match="is not zstd"):
        codec.decompress_pages([payloads[0][:-1], payloads[1]])      # cut short
    with pytest.raises(ValueError, match="unknown algorithm"):
        PageCodec("lzo")


def test_generated_data_has_the_compressibility_its_name_says():
    lz4 = PageCodec("lz4")

    def ratio(kind):
        data = benchmark.generate(kind, 32 * PAGE)
        return len(data) / sum(len(p) if p else PAGE for p in lz4.compress_pages(data))

    assert ratio("random") == 1.0
    assert 1.2 < ratio("mixed") < 2 < ratio("text")
    assert is_same_filled(benchmark.generate("zero", PAGE))


def test_benchmark_codecs_prints_a_table_and_json(tmp_path):
    runner = CliRunner()
    out = runner.invoke(cli, ["benchmark", "codecs", "--size", "256K", "--algorithms", "lz4,zstd:3",
                              "--threads", "2"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert "compress 2t" in lines[1] and lines[2].startswith("lz4") and lines[3].startswith("zstd:3")
    assert "same-fill check" in lines[-1]
    own = tmp_path / "mine.bin"
    own.write_bytes(TEXT[:8 * PAGE] + b"tail")
    out = runner.invoke(cli, ["benchmark", "codecs", "--data", str(own), "--algorithms", "zstd", "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["data"] == "mine.bin" and report["bytes"] == 8 * PAGE and report["unit"] == "GiB/s"
    assert report["codecs"][0]["algorithm"] == "zstd" and report["codecs"][0]["ratio"] > 2


@pytest.mark.parametrize("args, why", [
    (["--data", "/nonexistent"], "--data is zero, text, mixed, random or a readable file"),
    (["--algorithms", "lz4,lzo"], "unknown algorithm 'lzo'"),
    (["--algorithms", ","], "needs at least one algorithm"),
    (["--size", "1000"], "multiple of 4K"),
    (["--threads", "0"], "--threads"),
])
def test_benchmark_codecs_bad_input_is_one_line(args, why):
    assert_one_line_error(subprocess.run([CLI, "benchmark", "codecs", *args], capture_output=True, text=True,
                                         timeout=60), why)
