/*
 * Serving a batch of requests against a store's ops table, optionally with
 * a helper thread: one submitter's requests all land on one queue, so a
 * large batch (sequential I/O, deep random I/O) is split in two and the
 * halves are compressed or decompressed on two CPUs at once.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

#include "ublk_abi.h"
#include "ublk_shim.h"
#include "page_store.h"
#include "batch.h"

#define SECTOR_SHIFT 9
/* Only batches of large requests (sequential I/O) are worth waking the
 * helper for: with small random requests the submitter keeps the other CPU
 * busy, and the hand-over costs more than it saves (measured). */
#define SPLIT_MIN_BYTES (256u << 10)
#define SPLIT_MIN_AVERAGE (32u << 10)

struct store_ops {
    int (*read)(void *ctx, uint64_t offset, uint32_t len, void *dest);
    int (*write)(void *ctx, uint64_t offset, uint32_t len, const void *src);
    int (*discard)(void *ctx, uint64_t offset, uint64_t len);
    void (*free_ctx)(void *ctx);
};

enum helper_state { HELPER_IDLE, HELPER_WORK, HELPER_DONE, HELPER_EXIT };

struct helper {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    enum helper_state state;
    void *ctx;                          /* its own store context (codec state) */
    struct shim_request *reqs;
    int n;
    struct io_counters counts;
    struct batch_server *bs;
};

struct batch_server {
    const struct store_ops *ops;
    void *ctx;
    char *buffers;
    uint32_t buf_size;
    uint64_t dev_size;
    struct io_counters *counts;
    struct helper *helper;
};

static void serve_requests(const struct batch_server *bs, void *ctx,
                           struct shim_request *reqs, int n, struct io_counters *counts)
{
    for (int i = 0; i < n; i++) {
        struct shim_request *r = &reqs[i];
        uint64_t offset = r->start_sector << SECTOR_SHIFT;
        uint64_t len = (uint64_t)r->nr_sectors << SECTOR_SHIFT;
        char *buf = bs->buffers + (size_t)r->tag * bs->buf_size;
        int ret;

        if (offset + len > bs->dev_size || offset + len < offset) {
            counts->invalid_io++;
            r->result = -EIO;
            continue;
        }
        switch (r->op) {
        case UBLK_IO_OP_READ:
        case UBLK_IO_OP_WRITE:
            if (len > bs->buf_size) {
                counts->invalid_io++;
                r->result = -EIO;
                break;
            }
            if (r->op == UBLK_IO_OP_READ) {
                counts->reads++;
                ret = bs->ops->read(ctx, offset, (uint32_t)len, buf);
                counts->failed_reads += ret != 0;
                counts->read_bytes += ret ? 0 : len;
            } else {
                counts->writes++;
                ret = bs->ops->write(ctx, offset, (uint32_t)len, buf);
                counts->failed_writes += ret != 0;
                counts->written_bytes += ret ? 0 : len;
            }
            r->result = ret ? -EIO : (int32_t)len;
            break;
        case UBLK_IO_OP_FLUSH:
            counts->flushes++;          /* RAM holds nothing back */
            r->result = 0;
            break;
        case UBLK_IO_OP_DISCARD:
        case UBLK_IO_OP_WRITE_ZEROES:
            counts->discards++;
            ret = bs->ops->discard(ctx, offset, len);
            counts->failed_writes += ret != 0;
            r->result = ret ? -EIO : 0;
            break;
        default:
            counts->invalid_io++;
            r->result = -EOPNOTSUPP;
        }
    }
}

static void add_counts(struct io_counters *to, struct io_counters *from)
{
    uint64_t *t = (uint64_t *)to, *f = (uint64_t *)from;

    for (size_t i = 0; i < sizeof(*to) / sizeof(uint64_t); i++)
        t[i] += f[i];
    memset(from, 0, sizeof(*from));
}

static void *helper_main(void *arg)
{
    struct helper *h = arg;

    /* Like the queue threads: it writes pages out for reclaim, so it must
     * not wait on reclaim itself. */
    prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0);
    pthread_mutex_lock(&h->lock);
    for (;;) {
        while (h->state != HELPER_WORK && h->state != HELPER_EXIT)
            pthread_cond_wait(&h->cond, &h->lock);
        if (h->state == HELPER_EXIT)
            break;
        pthread_mutex_unlock(&h->lock);
        serve_requests(h->bs, h->ctx, h->reqs, h->n, &h->counts);
        pthread_mutex_lock(&h->lock);
        h->state = HELPER_DONE;
        pthread_cond_broadcast(&h->cond);
    }
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

void batch_serve(struct batch_server *bs, struct shim_request *reqs, int n)
{
    struct helper *h = bs->helper;
    uint64_t total = 0, half = 0;
    int split = n;

    if (h && n > 1) {
        for (int i = 0; i < n; i++)
            total += (uint64_t)reqs[i].nr_sectors << SECTOR_SHIFT;
        if (total >= SPLIT_MIN_BYTES && total / (uint64_t)n >= SPLIT_MIN_AVERAGE)
            for (split = 0; split < n - 1 && half < total / 2; split++)
                half += (uint64_t)reqs[split].nr_sectors << SECTOR_SHIFT;
    }
    if (split == n || split == 0) {
        serve_requests(bs, bs->ctx, reqs, n, bs->counts);
        return;
    }
    pthread_mutex_lock(&h->lock);
    h->reqs = reqs + split;
    h->n = n - split;
    h->state = HELPER_WORK;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);

    serve_requests(bs, bs->ctx, reqs, split, bs->counts);

    pthread_mutex_lock(&h->lock);
    while (h->state != HELPER_DONE)
        pthread_cond_wait(&h->cond, &h->lock);
    h->state = HELPER_IDLE;
    pthread_mutex_unlock(&h->lock);
    add_counts(bs->counts, &h->counts);
}

int batch_serve_queue(struct batch_server *bs, struct shim_queue *q, struct shim_request *reqs,
                      int depth, volatile int *inflight)
{
    int n = 0;

    for (;;) {
        *inflight = 0;
        n = shim_queue_run(q, n, reqs, depth);
        if (n < 0)
            return n;
        *inflight = n;
        batch_serve(bs, reqs, n);
    }
}

static struct batch_server *new_server(const struct store_ops *ops, void *ctx, char *buffers,
                                       uint32_t buf_size, uint64_t dev_size,
                                       struct io_counters *counts)
{
    struct batch_server *bs = calloc(1, sizeof(*bs));

    if (!bs)
        return NULL;
    *bs = (struct batch_server){ .ops = ops, .ctx = ctx, .buffers = buffers,
                                 .buf_size = buf_size, .dev_size = dev_size, .counts = counts };
    return bs;
}

static int start_helper(struct batch_server *bs, void *ctx)
{
    struct helper *h = calloc(1, sizeof(*h));
    int ret;

    if (!h)
        return -ENOMEM;
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->cond, NULL);
    h->state = HELPER_IDLE;
    h->ctx = ctx;
    h->bs = bs;
    ret = pthread_create(&h->thread, NULL, helper_main, h);
    if (ret) {
        free(h);
        return -ret;
    }
    pthread_setname_np(h->thread, "ublk-helper");
    bs->helper = h;
    return 0;
}

void batch_server_free(struct batch_server *bs)
{
    struct helper *h = bs->helper;

    if (h) {
        pthread_mutex_lock(&h->lock);
        h->state = HELPER_EXIT;
        pthread_cond_broadcast(&h->cond);
        pthread_mutex_unlock(&h->lock);
        pthread_join(h->thread, NULL);
        if (bs->ops->free_ctx)
            bs->ops->free_ctx(h->ctx);
        free(h);
    }
    if (bs->ops->free_ctx)
        bs->ops->free_ctx(bs->ctx);
    free(bs);
}

/* -- the ram store ---------------------------------------------------------- */

static int page_store_read(void *w, uint64_t offset, uint32_t len, void *dest)
{
    return ps_read(w, offset, len, dest);
}

static int page_store_write(void *w, uint64_t offset, uint32_t len, const void *src)
{
    return ps_write(w, offset, len, src);
}

static int page_store_discard(void *w, uint64_t offset, uint64_t len)
{
    return ps_discard(w, offset, len);
}

static void page_store_free(void *w)
{
    ps_worker_free(w);
}

static const struct store_ops page_store_ops = {
    page_store_read, page_store_write, page_store_discard, page_store_free,
};

struct batch_server *batch_server_for_page_store(struct page_store *ps, char *buffers,
                                                 uint32_t buf_size, uint64_t dev_size,
                                                 struct io_counters *counts, int helper,
                                                 int *err)
{
    struct ps_worker *w = ps_worker_new(ps), *hw = NULL;
    struct batch_server *bs = NULL;

    *err = -ENOMEM;
    if (!w || !(bs = new_server(&page_store_ops, w, buffers, buf_size, dev_size, counts)))
        goto fail;
    if (helper) {
        if (!(hw = ps_worker_new(ps)))
            goto fail;
        if ((*err = start_helper(bs, hw)) < 0)
            goto fail;
    }
    *err = 0;
    return bs;
fail:
    if (hw)
        ps_worker_free(hw);
    if (bs)
        free(bs);
    if (w)
        ps_worker_free(w);
    return NULL;
}

/* -- the null store: nothing kept, nothing to do ---------------------------- */

static int null_read(void *ctx, uint64_t offset, uint32_t len, void *dest)
{
    (void)ctx, (void)offset, (void)len, (void)dest;
    return 0;
}

static int null_write(void *ctx, uint64_t offset, uint32_t len, const void *src)
{
    (void)ctx, (void)offset, (void)len, (void)src;
    return 0;
}

static int null_discard(void *ctx, uint64_t offset, uint64_t len)
{
    (void)ctx, (void)offset, (void)len;
    return 0;
}

static const struct store_ops null_ops = { null_read, null_write, null_discard, NULL };

struct batch_server *batch_server_for_null(char *buffers, uint32_t buf_size, uint64_t dev_size,
                                           struct io_counters *counts, int *err)
{
    struct batch_server *bs = new_server(&null_ops, NULL, buffers, buf_size, dev_size, counts);

    *err = bs ? 0 : -ENOMEM;
    return bs;
}
