/*
 * A queue's server: the requests the queue's ring hands over (ublk_transport.h),
 * served against a store named in store_table (store.h, native/stores/).
 * Also parsed by cffi.
 */
#ifndef TRUENO_QUEUE_SERVER_H
#define TRUENO_QUEUE_SERVER_H

#include <stdint.h>

#include "ublk/ublk_transport.h"

/* One queue's request counters, written by that queue's threads alone. */
struct io_counters {
    uint64_t reads, writes, discards, flushes;
    uint64_t failed_reads, failed_writes, invalid_io;
    uint64_t read_bytes, written_bytes;
};

/* One queue's server: the store's per-thread state, where the requests'
 * data is, and optionally a helper thread that serves half of every large
 * batch on another CPU, with a writer thread that serves swap's writes
 * (queue_server.c says why). */
struct queue_server;

/* A server for the store called `store_name`, over `store` (the object the
 * store's Python side opened, or NULL), for requests of at most buf_size
 * bytes. The requests' data is either
 *   - in `buffers`, each tag's buf_size apart (copy_fd -1), or
 *   - read and written with pread/pwrite on copy_fd, queue q_id's /dev/ublkcN,
 *     through one buffer per serving thread (UBLK_F_USER_COPY; buffers NULL):
 *     a few hundred KiB a queue where tag buffers lock depth x buf_size.
 * NULL with *err = -errno on failure (-ENOENT: no such store). */
struct queue_server *queue_server_new(const char *store_name, void *store, char *buffers,
                                      uint32_t buf_size, uint64_t dev_size,
                                      struct io_counters *counts, int helper,
                                      int copy_fd, uint16_t q_id, int *err);
/* Serve reqs[0..n): sets every result and counts it. */
void queue_server_serve(struct queue_server *qs, struct ublk_request *reqs, int n);
/* Serve one queue until it shuts down: commit, fetch and serve batch after
 * batch without returning. The whole loop runs in C with the GIL released:
 * under swap, a Python thread holding the GIL may be waiting for memory that
 * only this queue can free. `inflight` shows the batch being served. Returns
 * -ENODEV once the queue is stopped, or another -errno. */
int queue_server_run(struct queue_server *qs, struct queue_ring *q, struct ublk_request *reqs,
                     int depth, volatile int *inflight);
/* Requests ending past `dev_size` bytes fail from now on (a resize). */
void queue_server_set_size(struct queue_server *qs, uint64_t dev_size);
/* Stops the helper thread and frees the per-thread state. */
void queue_server_free(struct queue_server *qs);

#endif
