"""trueno-ublk: a compressed RAM block device for Linux, served from user space over ublk."""

__version__ = "0.1.0"
