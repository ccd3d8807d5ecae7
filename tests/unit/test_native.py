"""The C core builds warning-free, each header stands alone, and every C
store has its registry entry (and every entry its C file)."""
import subprocess
from pathlib import Path

import pytest

from trueno_ublk.base.codecs import codec_for
from trueno_ublk.stores import STORES, open_store, store_name
from trueno_ublk.stores.direct import DirectClient

NATIVE = Path(__file__).resolve().parents[2] / "native"
FLAGS = ["-fsyntax-only", "-std=gnu11", "-Wall", "-Wextra", "-Werror", f"-I{NATIVE}"]


@pytest.mark.parametrize("source", sorted(p.relative_to(NATIVE).as_posix()
                                          for p in NATIVE.rglob("*.[ch]")))
def test_builds_without_warnings_and_stands_alone(source):
    # A header alone is compiled as C: it must include what it uses. The
    # static assertions in ublk_transport.c check ublk_abi.h's encodings and sizes.
    result = subprocess.run(["gcc", *FLAGS, "-x", "c", str(NATIVE / source)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_store_file_has_a_registry_entry_and_serves():
    assert set(STORES) == {p.stem for p in (NATIVE / "stores").glob("*.c")}
    for name, kind in STORES.items():
        store = open_store(name, 1 << 20, codec_for("lz4") if kind.codec else None)
        assert DirectClient(store, depth=1, buf_size=4096).serve([("write", 0, 4096)]) == [4096]
        store.close()


def test_the_page_store_answers_to_its_old_name_too():
    store = open_store("ram", 1 << 20, codec_for("lz4"))
    assert store.name == "page" and store_name("ram") == "page"
    store.close()
