"""What the benchmarks share: the devices and fio of
trueno_ublk.benchmark.targets, the checkout, and the data they compare on."""
import sys
from pathlib import Path

from trueno_ublk.benchmark.targets import MiB, Trueno, Zram, fio, sh  # noqa: F401  (the scripts' imports)

CLI = str(Path(sys.executable).with_name("trueno-ublk"))
TOP = Path(__file__).resolve().parent.parent
# fio's data for every comparison: half of each buffer compressible.
HALF_COMPRESSIBLE = "--buffer_compress_percentage=50 --refill_buffers"
