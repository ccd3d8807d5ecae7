/*
 * Serving a batch of requests from shim_queue_run against a store given as
 * an ops table -- like the kernel selftests' ublk server, one small file
 * per store behind it. Also parsed by cffi.
 */

/* One queue's request counters, written by that queue's threads alone. */
struct io_counters {
    uint64_t reads, writes, discards, flushes;
    uint64_t failed_reads, failed_writes, invalid_io;
    uint64_t read_bytes, written_bytes;
};

/* One queue's server: the store's per-thread context, the tag buffers, and
 * optionally a helper thread that serves half of every large batch on
 * another CPU. */
struct batch_server;

/* The ram store (page_store.h) and the null store, which keeps nothing and
 * measures the transport alone. NULL with *err = -errno on failure. */
struct batch_server *batch_server_for_page_store(struct page_store *ps, char *buffers,
                                                 uint32_t buf_size, uint64_t dev_size,
                                                 struct io_counters *counts, int helper,
                                                 int *err);
struct batch_server *batch_server_for_null(char *buffers, uint32_t buf_size, uint64_t dev_size,
                                           struct io_counters *counts, int *err);
/* Serve reqs[0..n): sets every result and counts it. Releases the GIL. */
void batch_serve(struct batch_server *bs, struct shim_request *reqs, int n);
/* Serve one queue until it shuts down: commit, fetch and serve batch after
 * batch without returning. The whole loop runs in C with the GIL released:
 * under swap, a Python thread holding the GIL may be waiting for memory that
 * only this queue can free. `inflight` shows the batch being served. Returns
 * -ENODEV once the queue is stopped, or another -errno. */
int batch_serve_queue(struct batch_server *bs, struct shim_queue *q, struct shim_request *reqs,
                      int depth, volatile int *inflight);
void batch_server_free(struct batch_server *bs);
