"""cffi build script: compiles the C core into trueno_ublk._native.

The C API and the kernel's wire structs are parsed from the headers
themselves, so each fact is declared exactly once. The sources are every
C file of the layers below (ublk/, server/, page_store/, stores/). Every
file in native/stores/ is a store: this script lists them in store_table,
so that adding a store is adding its file (and its line in the Python
registry).
"""
import re
from pathlib import Path

from cffi import FFI

here = Path(__file__).resolve().parent
HEADERS = ("ublk/ublk_abi.h", "ublk/ublk_transport.h", "page_store/page_store.h", "server/queue_server.h")
LAYERS = ("ublk", "server", "page_store", "stores")
STORES = sorted(p.stem for p in (here / "stores").glob("*.c"))
# cffi's parser takes no include guards or includes: the compiler needs them.
PREPROCESSOR_ONLY = re.compile(r"^#(?:include|ifndef|endif|define TRUENO_\w+_H$).*$", re.M)


def cdef_text(header: str) -> str:
    return PREPROCESSOR_ONLY.sub("", (here / header).read_text())


def store_table() -> str:
    """C for store_table: every store's ops, found by file name."""
    return ("".join(f"extern const struct store_ops {s}_store_ops;\n" for s in STORES)
            + "const struct store_ops *const store_table[] = { "
            + "".join(f"&{s}_store_ops, " for s in STORES) + "NULL };\n")


ffibuilder = FFI()
ffibuilder.cdef("".join(map(cdef_text, HEADERS)))
# libc calls Python's os module lacks; values come from the system headers.
ffibuilder.cdef("""
int mlockall(int flags);
#define MCL_CURRENT ...
#define MCL_FUTURE ...
#define MCL_ONFAULT ...
""")
ffibuilder.set_source(
    "trueno_ublk._native",
    "#define _GNU_SOURCE\n#include <sys/mman.h>\n"
    + "".join(f'#include "{h}"\n' for h in HEADERS) + '#include "server/store.h"\n' + store_table(),
    sources=[str(p.relative_to(here.parent)) for layer in LAYERS for p in sorted((here / layer).glob("*.c"))],
    include_dirs=["native"],
    libraries=["uring", "lz4", "zstd", "m"],
    extra_compile_args=["-O2", "-Wall", "-std=gnu11"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
