"""The folders are layers: a module imports only its own layer and the ones
below it, a C file includes only its own folder's headers and the layers'
below. Checked on the sources, imports inside functions included, so that
a call up a layer cannot creep back in."""
import ast
import re
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]
# Lowest first. _native is the compiled C core, below everything.
PYTHON_LAYERS = ["_native", "base", "stores", "devices", "observe", "systemd", "daemon", "benchmark", "cli"]
C_LAYERS = ["ublk", "server", "page_store", "stores"]


def imported_layers(path: Path) -> set[str]:
    """The trueno_ublk layers (first name after the package) `path` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
            [a.name for a in node.names] if isinstance(node, ast.Import) else []
        for name in names:
            parts = name.split(".")
            if parts[0] == "trueno_ublk" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_every_module_is_in_a_layer():
    package = TOP / "trueno_ublk"
    loose = sorted(p.name for p in package.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    # supervisor.py: only what a daemon from before the layers execs on upgrade.
    assert loose == ["supervisor.py"], f"modules outside every layer: {loose}"
    folders = sorted(p.name for p in package.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert folders == sorted(PYTHON_LAYERS[1:]), "a folder that is not a layer, or a layer without its folder"


def test_python_imports_go_down_only():
    up = []
    for rank, layer in enumerate(PYTHON_LAYERS[1:], start=1):
        for path in sorted((TOP / "trueno_ublk" / layer).rglob("*.py")):
            above = {name for name in imported_layers(path)
                     if name in PYTHON_LAYERS and PYTHON_LAYERS.index(name) > rank}
            up += [f"{path.relative_to(TOP)} imports {name}" for name in sorted(above)]
    assert not up, "imports up a layer: " + "; ".join(up)


def test_c_includes_go_down_only():
    up = []
    for rank, layer in enumerate(C_LAYERS):
        for path in sorted((TOP / "native" / layer).glob("*.[ch]")):
            for folder in re.findall(r'^#include "(\w+)/', path.read_text(), re.M):
                if folder not in C_LAYERS[:rank + 1]:
                    up.append(f"{path.relative_to(TOP)} includes {folder}/")
    assert not up, "includes up a layer: " + "; ".join(up)
