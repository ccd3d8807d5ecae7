import pytest

from trueno_ublk.base.units import format_size, parse_size


@pytest.mark.parametrize("text, expected", [
    ("4096", 4096), ("4K", 4096), ("4k", 4096), ("512M", 512 << 20), ("8G", 8 << 30),
    ("1GiB", 1 << 30), ("1.5G", 3 << 29), ("2T", 2 << 40), (" 1G ", 1 << 30),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "-1G", "12Q", "G", "1.5", "1e9", "0x10", "1 G B"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize("n, text", [
    (0, "0B"), (512, "512B"), (4096, "4K"), (3 << 29, "1.5G"), (8 << 30, "8G"), (1 << 40, "1T"),
])
def test_format_size(n, text):
    assert format_size(n) == text
