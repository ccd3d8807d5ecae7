"""The daemon: the supervisor of one device, its I/O worker and queues, the
admin socket's server, the detach of `create`."""
