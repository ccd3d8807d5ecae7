"""A queue thread that cannot start says so instead of leaving start-up
waiting forever."""
import errno

import prctl

from trueno_ublk.daemon import queue
from trueno_ublk.stores import open_store


def test_a_queue_that_cannot_become_an_io_flusher_reports_it(monkeypatch):
    def refuse(flag):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(prctl, "set_io_flusher", refuse)
    store = open_store("null", 1 << 20)
    q = queue.Queue(-1, 0, 4, 4096, store, 0, 0, user_copy=False)
    q.start()
    assert q.opened.wait(10), "the queue never reported its start"
    assert q.open_error is not None and q.open_error.errno == errno.EPERM
    assert "CAP_SYS_RESOURCE" in q.open_error.strerror
    q.thread.join(10)
    assert not q.thread.is_alive()
    store.close()
