"""The daemon's log: lines on stderr, which systemd's journal or the
device's log file (/run/trueno-ublk/N.log) takes."""
import logging
import os
import sys


def configure_logging() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(threadName)s %(levelname)s %(message)s")


def redirect_output(path) -> None:
    """stdout and stderr (and so the log) to `path`, appended."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
