"""The null store keeps no data: it measures the ublk transport alone."""
from trueno_ublk.stores.base import Store


class NullStore(Store):
    name = "null"

    def __init__(self, size: int):
        self.size = size

    def read(self, offset, dest):
        pass

    def write(self, offset, src):
        pass

    def discard(self, offset, length):
        pass
