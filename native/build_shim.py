"""cffi build script: compiles the C shim into trueno_ublk._shim.

The shim's API (ublk_shim.h) and the kernel's wire structs (ublk_abi.h) are
parsed from the headers themselves, so each fact is declared exactly once.
"""
from pathlib import Path

from cffi import FFI

here = Path(__file__).resolve().parent
ffibuilder = FFI()
ffibuilder.cdef((here / "ublk_abi.h").read_text() + (here / "ublk_shim.h").read_text())
# libc calls Python's os module lacks; values come from the system headers.
ffibuilder.cdef("""
int mlockall(int flags);
int fallocate(int fd, int mode, long offset, long len);
#define FALLOC_FL_KEEP_SIZE ...
#define FALLOC_FL_PUNCH_HOLE ...
#define MCL_CURRENT ...
#define MCL_FUTURE ...
#define MCL_ONFAULT ...
""")
ffibuilder.set_source(
    "trueno_ublk._shim",
    '#define _GNU_SOURCE\n#include <fcntl.h>\n#include <stdint.h>\n#include <stddef.h>\n'
    '#include <sys/mman.h>\n'
    '#include "ublk_abi.h"\n#include "ublk_shim.h"\n',
    sources=["native/ublk_shim.c"],
    include_dirs=["native"],
    libraries=["uring"],
    extra_compile_args=["-O2", "-Wall", "-std=gnu11"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
