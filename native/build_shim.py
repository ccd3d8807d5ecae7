"""cffi build script: compiles the C shim into trueno_ublk._shim.

The shim's API (ublk_shim.h) and the kernel's wire structs (ublk_abi.h) are
parsed from the headers themselves, so each fact is declared exactly once.
"""
from pathlib import Path

from cffi import FFI

here = Path(__file__).resolve().parent
ffibuilder = FFI()
ffibuilder.cdef("".join((here / h).read_text() for h in ("ublk_abi.h", "ublk_shim.h", "page_store.h", "batch.h")))
# libc calls Python's os module lacks; values come from the system headers.
ffibuilder.cdef("""
int mlockall(int flags);
#define MCL_CURRENT ...
#define MCL_FUTURE ...
#define MCL_ONFAULT ...
""")
ffibuilder.set_source(
    "trueno_ublk._shim",
    '#define _GNU_SOURCE\n#include <fcntl.h>\n#include <stdint.h>\n#include <stddef.h>\n'
    '#include <sys/mman.h>\n'
    '#include "ublk_abi.h"\n#include "ublk_shim.h"\n#include "page_store.h"\n#include "batch.h"\n',
    sources=["native/ublk_shim.c", "native/page_store.c", "native/batch.c"],
    include_dirs=["native"],
    libraries=["uring", "lz4", "zstd"],
    extra_compile_args=["-O2", "-Wall", "-std=gnu11"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
