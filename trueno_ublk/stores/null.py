"""The null store keeps no data: it measures the ublk transport alone."""
from trueno_ublk._shim import ffi, lib
from trueno_ublk.stores.base import Store


class NullStore(Store):
    name = "null"

    def __init__(self, size: int):
        self.size = size
        self._err = ffi.new("int *")

    def read(self, offset, dest):
        pass

    def write(self, offset, src):
        pass

    def discard(self, offset, length):
        pass

    def batch_server(self, buffers, buf_size: int, dev_size: int, counts):
        return self._keep(lib.batch_server_for_null(ffi.from_buffer(buffers), buf_size, dev_size,
                                                    counts, self._err), buffers)

    def close(self) -> None:
        self.close_servers()
