/*
 * A queue's server: each batch of requests the queue's ring hands over is
 * served against a store, found by name in store_table (native/stores/),
 * optionally with a helper thread: one submitter's requests all land on one
 * queue, so a large batch (sequential I/O) is split in two and the halves
 * are compressed or decompressed on two CPUs at once.
 *
 * With the helper comes a writer thread, which serves swap's writes off
 * the queue thread. Under swap a program's reclaim writes pages out and
 * then faults on the page it needs: its read must not wait while the queue
 * thread compresses the pages written just before (under emulation about
 * 50 us a page). The queue thread hands each swap write to the writer and
 * goes on serving reads; the writer serves the write (copy, compression,
 * store) and wakes the queue thread's ring, which commits it with its next
 * batch (only the thread that fetched a tag may commit it). The writer
 * runs at the default priority, the queue thread at a higher one: a read
 * arriving while a write is compressed gets the CPU at once. Other writes
 * (a filesystem's, fio's) stay on the queue thread, in order with the
 * rest of their batch.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "ublk/ublk_abi.h"
#include "ublk/ublk_transport.h"
#include "server/store.h"
#include "server/queue_server.h"

/* Only batches of large requests (sequential I/O) are worth waking the
 * helper for: with small random requests the submitter keeps the other CPU
 * busy, and the hand-over costs more than it saves (measured). */
#define SPLIT_MIN_BYTES (256u << 10)
#define SPLIT_MIN_AVERAGE (32u << 10)

/* What the helper and the writer share: a thread serving with its own
 * store state and buffer, woken through its lock and condition. The first
 * member of each, so that its thread's argument is either. */
struct side_thread {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool exiting;
    void *ctx;                          /* its own per-thread store state */
    char *copy_buf;                     /* and its own buffer (user copy) */
    struct queue_server *qs;
};

enum helper_state { HELPER_IDLE, HELPER_WORK, HELPER_DONE };

struct helper {
    struct side_thread t;
    enum helper_state state;
    struct ublk_request *reqs;
    int n;
    struct io_counters counts;
};

struct writer {
    struct side_thread t;
    bool busy;
    struct ublk_request *todo, *done;   /* a queue's depth each */
    int n_todo, n_done;
    struct io_counters counts;          /* of the writes done, for the queue thread to add */
    struct queue_ring *ring;            /* woken when a write is done; NULL: not serving */
};

struct queue_server {
    const struct store_ops *ops;
    void *ctx;
    char *buffers;                      /* the tag buffers, or NULL: */
    char *copy_buf;                     /* user copy: the queue thread's buffer */
    int copy_fd;
    uint16_t q_id;
    uint32_t buf_size;
    uint64_t dev_size;                  /* changed by queue_server_set_size() */
    struct io_counters *counts;
    struct helper *helper;
    struct writer *writer;              /* NULL: every request on the queue thread */
};

/* Where a request's data is for pread/pwrite on /dev/ublkcN (user copy). */
static off_t copy_pos(const struct queue_server *qs, uint16_t tag)
{
    return (off_t)(UBLKSRV_IO_BUF_OFFSET + ((uint64_t)qs->q_id << UBLK_QID_OFF)
                   + ((uint64_t)tag << UBLK_TAG_OFF));
}

/* A write's data into `buf` (user copy); 0 or -EIO. */
static int copy_in(const struct queue_server *qs, uint16_t tag, char *buf, uint64_t len)
{
    return pread(qs->copy_fd, buf, len, copy_pos(qs, tag)) == (ssize_t)len ? 0 : -EIO;
}

/* A read's data out of `buf` (user copy); 0 or -EIO. */
static int copy_out(const struct queue_server *qs, uint16_t tag, const char *buf, uint64_t len)
{
    return pwrite(qs->copy_fd, buf, len, copy_pos(qs, tag)) == (ssize_t)len ? 0 : -EIO;
}

/* `copy_buf`: this thread's buffer with user copy, else NULL. */
static void serve_requests(const struct queue_server *qs, void *ctx, char *copy_buf,
                           struct ublk_request *reqs, int n, struct io_counters *counts)
{
    for (int i = 0; i < n; i++) {
        struct ublk_request *r = &reqs[i];
        uint64_t offset = r->start_sector << SECTOR_SHIFT;
        uint64_t len = (uint64_t)r->nr_sectors << SECTOR_SHIFT;
        char *buf = copy_buf ? copy_buf : qs->buffers + (size_t)r->tag * qs->buf_size;
        int ret;

        if (offset + len > __atomic_load_n(&qs->dev_size, __ATOMIC_RELAXED) || offset + len < offset) {
            counts->invalid_io++;
            r->result = -EIO;
            continue;
        }
        switch (r->op) {
        case UBLK_IO_OP_READ:
        case UBLK_IO_OP_WRITE:
            if (len > qs->buf_size) {
                counts->invalid_io++;
                r->result = -EIO;
                break;
            }
            if (r->op == UBLK_IO_OP_READ) {
                counts->reads++;
                ret = qs->ops->read(ctx, offset, (uint32_t)len, buf);
                if (ret == 0 && copy_buf)
                    ret = copy_out(qs, r->tag, buf, len);
                counts->failed_reads += ret != 0;
                counts->read_bytes += ret ? 0 : len;
            } else {
                counts->writes++;
                ret = copy_buf ? copy_in(qs, r->tag, buf, len) : 0;
                if (ret == 0)
                    ret = qs->ops->write(ctx, offset, (uint32_t)len, buf, r->swap);
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
            ret = qs->ops->discard(ctx, offset, len);
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

/* Fault in the stack a serving thread may reach, before its first request:
 * a deeper path first taken under reclaim (the decode of a zstd frame, say)
 * would fault there, and wait for reclaim, which waits for this thread.
 * The worker's mlockall keeps it resident from then on. */
#define STACK_RESIDENT (64u << 10)

static void __attribute__((noinline)) touch_stack(void)
{
    char below[STACK_RESIDENT];

    for (unsigned at = 0; at < STACK_RESIDENT; at += 4096)
        below[at] = 0;
    __asm__ volatile("" : : "r"(below) : "memory");    /* the stores stay */
}

static void *helper_main(void *arg)
{
    struct helper *h = arg;

    /* Like the queue threads: it writes pages out for reclaim, so it must
     * not wait on reclaim itself. */
    prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0);
    touch_stack();
    pthread_mutex_lock(&h->t.lock);
    for (;;) {
        while (h->state != HELPER_WORK && !h->t.exiting)
            pthread_cond_wait(&h->t.cond, &h->t.lock);
        if (h->t.exiting)
            break;
        pthread_mutex_unlock(&h->t.lock);
        serve_requests(h->t.qs, h->t.ctx, h->t.copy_buf, h->reqs, h->n, &h->counts);
        pthread_mutex_lock(&h->t.lock);
        h->state = HELPER_DONE;
        pthread_cond_broadcast(&h->t.cond);
    }
    pthread_mutex_unlock(&h->t.lock);
    return NULL;
}

static void *writer_main(void *arg)
{
    struct writer *wr = arg;
    struct io_counters done_counts = { 0 };

    prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0);       /* it writes pages out for reclaim */
    touch_stack();
    pthread_mutex_lock(&wr->t.lock);
    for (;;) {
        while (wr->n_todo == 0 && !wr->t.exiting)
            pthread_cond_wait(&wr->t.cond, &wr->t.lock);
        if (wr->t.exiting)
            break;
        struct ublk_request r = wr->todo[0];

        memmove(wr->todo, wr->todo + 1, (size_t)--wr->n_todo * sizeof(*wr->todo));
        wr->busy = true;
        pthread_mutex_unlock(&wr->t.lock);
        serve_requests(wr->t.qs, wr->t.ctx, wr->t.copy_buf, &r, 1, &done_counts);
        pthread_mutex_lock(&wr->t.lock);
        wr->busy = false;
        add_counts(&wr->counts, &done_counts);
        wr->done[wr->n_done++] = r;
        /* Under the lock: the ring is not closed meanwhile (see
         * writer_serve_ring). One wake is enough until the queue thread
         * takes what is done. */
        if (wr->n_done == 1 && wr->ring)
            queue_ring_wake(wr->ring);
        pthread_cond_broadcast(&wr->t.cond);
    }
    pthread_mutex_unlock(&wr->t.lock);
    return NULL;
}

/* Hand swap's writes among reqs[0..n) to the writer; the others stay, in
 * order, at the front: how many. */
static int hand_over_writes(struct queue_server *qs, struct ublk_request *reqs, int n)
{
    struct writer *wr = qs->writer;
    int kept = 0, handed = 0;

    if (!wr)
        return n;
    pthread_mutex_lock(&wr->t.lock);
    for (int i = 0; i < n; i++) {
        if (reqs[i].op == UBLK_IO_OP_WRITE && reqs[i].swap) {
            wr->todo[wr->n_todo++] = reqs[i];
            handed++;
        } else {
            reqs[kept++] = reqs[i];
        }
    }
    if (handed)
        pthread_cond_broadcast(&wr->t.cond);
    pthread_mutex_unlock(&wr->t.lock);
    return kept;
}

/* Append the writes the writer has done to reqs[0..n), for the commit:
 * the new count. */
static int take_done_writes(struct queue_server *qs, struct ublk_request *reqs, int n)
{
    struct writer *wr = qs->writer;

    if (!wr)
        return n;
    pthread_mutex_lock(&wr->t.lock);
    memcpy(reqs + n, wr->done, (size_t)wr->n_done * sizeof(*reqs));
    n += wr->n_done;
    wr->n_done = 0;
    add_counts(qs->counts, &wr->counts);
    pthread_mutex_unlock(&wr->t.lock);
    return n;
}

/* The queue's thread serves with the writer from now on (`ring`), or no
 * longer (NULL): then the writes not begun are dropped, uncommitted (the
 * kernel requeues them for the next worker or fails them), and the one
 * being served is waited for, so that nothing wakes a closed ring. */
static int writer_serve_ring(struct queue_server *qs, struct queue_ring *ring, int depth)
{
    struct writer *wr = qs->writer;

    if (!wr)
        return 0;
    if (ring && !wr->todo) {            /* touched now: resident before any request */
        size_t len = (size_t)depth * sizeof(struct ublk_request);

        if (!(wr->todo = malloc(len)) || !(wr->done = malloc(len)))
            return -ENOMEM;
        memset(wr->todo, 0, len);
        memset(wr->done, 0, len);
    }
    pthread_mutex_lock(&wr->t.lock);
    wr->ring = ring;
    if (!ring) {
        wr->n_todo = 0;
        while (wr->busy)
            pthread_cond_wait(&wr->t.cond, &wr->t.lock);
        wr->n_done = 0;
    }
    pthread_mutex_unlock(&wr->t.lock);
    return 0;
}

/* Where to split reqs[0..n) between the thread and its helper: 0 when the
 * batch is not worth it (or there is no helper). */
static int split_point(const struct queue_server *qs, const struct ublk_request *reqs, int n)
{
    uint64_t total = 0, half = 0;
    int split = 0;

    if (!qs->helper || n < 2)
        return 0;
    for (int i = 0; i < n; i++)
        total += (uint64_t)reqs[i].nr_sectors << SECTOR_SHIFT;
    if (total < SPLIT_MIN_BYTES || total / (uint64_t)n < SPLIT_MIN_AVERAGE)
        return 0;
    for (split = 0; split < n - 1 && half < total / 2; split++)
        half += (uint64_t)reqs[split].nr_sectors << SECTOR_SHIFT;
    return split;
}

/* Serve reqs[0..n), those from `split` on by the helper (0: none). */
static void serve_split(struct queue_server *qs, struct ublk_request *reqs, int n, int split)
{
    struct helper *h = qs->helper;

    if (split == 0) {
        serve_requests(qs, qs->ctx, qs->copy_buf, reqs, n, qs->counts);
        return;
    }
    pthread_mutex_lock(&h->t.lock);
    h->reqs = reqs + split;
    h->n = n - split;
    h->state = HELPER_WORK;
    pthread_cond_broadcast(&h->t.cond);
    pthread_mutex_unlock(&h->t.lock);

    serve_requests(qs, qs->ctx, qs->copy_buf, reqs, split, qs->counts);

    pthread_mutex_lock(&h->t.lock);
    while (h->state != HELPER_DONE)
        pthread_cond_wait(&h->t.cond, &h->t.lock);
    h->state = HELPER_IDLE;
    pthread_mutex_unlock(&h->t.lock);
    add_counts(qs->counts, &h->counts);
}

void queue_server_serve(struct queue_server *qs, struct ublk_request *reqs, int n)
{
    serve_split(qs, reqs, n, split_point(qs, reqs, n));
}

#define READ_ROUNDS_AHEAD 8

/* Moves the writes among reqs[0..n) to the front; returns how many. */
static int writes_first(struct ublk_request *reqs, int n)
{
    int w = 0;

    for (int i = 0; i < n; i++)
        if (reqs[i].op == UBLK_IO_OP_WRITE) {
            struct ublk_request r = reqs[w];

            reqs[w++] = reqs[i];
            reqs[i] = r;
        }
    return w;
}

/*
 * Serves the batch reqs[0..n) and the requests that arrive while its writes
 * are compressed; returns how many served requests, at the front of reqs,
 * are left for the next queue_ring_run to commit, or -errno.
 *
 * Reads go first, and are committed at once when writes follow: under swap
 * the faulting thread reclaims just before it reads, so its read arrives
 * behind the pages it wrote, and would otherwise wait for their
 * compression. After each write the ring is polled (in the syscall that
 * commits it), and reads that came meanwhile go ahead of the writes left;
 * the program that asked for them runs on while the writes are compressed.
 * Not for ever: after READ_ROUNDS_AHEAD rounds of reads with more coming,
 * one write is served. Reads that kept coming would otherwise hold swap's
 * writes back for good, and reclaim, waiting on them, would free nothing.
 */
static int serve_batch(struct queue_server *qs, struct queue_ring *q, struct ublk_request *reqs,
                       int n, int depth, volatile int *inflight)
{
    int n_writes = 0;                   /* reqs[0..n_writes): writes not yet served */
    int read_rounds = 0;                /* rounds of reads served since a write */

    for (;;) {
        int n_reads, split, m;

        n = n_writes + hand_over_writes(qs, reqs + n_writes, n - n_writes);
        n_writes += writes_first(reqs + n_writes, n - n_writes);
        n_reads = n - n_writes;
        if (n_reads > 0)
            queue_server_serve(qs, reqs + n_writes, n_reads);
        if (n_writes == 0)
            return n;                   /* committed with the wait for more */
        if (n_reads > 0) {
            m = queue_ring_poll(q, reqs + n_writes, n_reads, reqs + n_writes, depth - n_writes);
            if (m < 0)
                return m;
            n = n_writes + m;
            *inflight = n;
            if (m > 0 && ++read_rounds < READ_ROUNDS_AHEAD)
                continue;
        }
        if (n == n_writes) {            /* nothing came meanwhile */
            split = split_point(qs, reqs, n_writes);
            if (n_writes == 1 || split > 0) {
                serve_split(qs, reqs, n_writes, split);
                return n_writes;        /* the last, or sequential I/O: throughput first */
            }
        }
        struct ublk_request served = reqs[0];

        queue_server_serve(qs, &served, 1);
        read_rounds = 0;
        memmove(reqs, reqs + 1, (size_t)--n * sizeof(*reqs));
        n_writes--;
        if ((m = queue_ring_poll(q, &served, 1, reqs + n, depth - n)) < 0)
            return m;
        n += m;
        *inflight = n;
    }
}

int queue_server_run(struct queue_server *qs, struct queue_ring *q, struct ublk_request *reqs,
                      int depth, volatile int *inflight)
{
    int n = 0;

    touch_stack();
    if ((n = writer_serve_ring(qs, q, depth)) < 0)
        return n;
    for (;;) {
        *inflight = 0;
        n = queue_ring_run(q, take_done_writes(qs, reqs, n), reqs, depth);
        if (n < 0)
            break;
        *inflight = n;
        n = serve_batch(qs, q, reqs, n, depth, inflight);
        if (n < 0)
            break;
    }
    writer_serve_ring(qs, NULL, 0);
    return n;
}

/* A user-copy buffer for one serving thread: touched now, so that it is
 * resident (and locked, under the worker's mlockall) before any request. */
static char *new_copy_buf(uint32_t size)
{
    char *buf = aligned_alloc(4096, (size + 4095u) / 4096u * 4096u);

    if (buf)
        memset(buf, 0, size);
    return buf;
}

/* Start `t`'s thread, called `name`, running main(t) with store state
 * `ctx`: 0 or -errno. */
static int side_thread_start(struct queue_server *qs, struct side_thread *t, void *ctx,
                             void *(*main)(void *), const char *name)
{
    int ret;

    if (qs->copy_fd >= 0 && !(t->copy_buf = new_copy_buf(qs->buf_size)))
        return -ENOMEM;
    pthread_mutex_init(&t->lock, NULL);
    pthread_cond_init(&t->cond, NULL);
    t->ctx = ctx;
    t->qs = qs;
    if ((ret = pthread_create(&t->thread, NULL, main, t))) {
        free(t->copy_buf);
        return -ret;
    }
    pthread_setname_np(t->thread, name);
    return 0;
}

static int start_helper(struct queue_server *qs, void *ctx)
{
    struct helper *h = calloc(1, sizeof(*h));
    int ret;

    if (!h)
        return -ENOMEM;
    h->state = HELPER_IDLE;
    if ((ret = side_thread_start(qs, &h->t, ctx, helper_main, "ublk-helper")) < 0) {
        free(h);
        return ret;
    }
    qs->helper = h;
    return 0;
}

static int start_writer(struct queue_server *qs, void *ctx)
{
    struct writer *wr = calloc(1, sizeof(*wr));
    int ret;

    if (!wr)
        return -ENOMEM;
    if ((ret = side_thread_start(qs, &wr->t, ctx, writer_main, "ublk-writer")) < 0) {
        free(wr);
        return ret;
    }
    qs->writer = wr;
    return 0;
}

static void *thread_new(const struct store_ops *ops, void *store, int *err)
{
    void *ctx = ops->thread_new ? ops->thread_new(store) : NULL;

    *err = ops->thread_new && !ctx ? -ENOMEM : 0;
    return ctx;
}

static void thread_free(const struct store_ops *ops, void *ctx)
{
    if (ops->thread_free && ctx)
        ops->thread_free(ctx);
}

/* Stop `t`'s thread and free what it served with. */
static void side_thread_stop(struct side_thread *t)
{
    pthread_mutex_lock(&t->lock);
    t->exiting = true;
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->lock);
    pthread_join(t->thread, NULL);
    thread_free(t->qs->ops, t->ctx);
    free(t->copy_buf);
}

struct queue_server *queue_server_new(const char *store_name, void *store, char *buffers,
                                      uint32_t buf_size, uint64_t dev_size,
                                      struct io_counters *counts, int helper,
                                      int copy_fd, uint16_t q_id, int *err)
{
    const struct store_ops *ops = NULL;
    struct queue_server *qs;
    void *helper_ctx;

    for (int i = 0; store_table[i]; i++)
        if (strcmp(store_table[i]->name, store_name) == 0)
            ops = store_table[i];
    if (!ops) {
        *err = -ENOENT;
        return NULL;
    }
    if (!(qs = calloc(1, sizeof(*qs)))) {
        *err = -ENOMEM;
        return NULL;
    }
    *qs = (struct queue_server){ .ops = ops, .buffers = buffers, .copy_fd = copy_fd,
                                 .q_id = q_id, .buf_size = buf_size,
                                 .dev_size = dev_size, .counts = counts };
    if (copy_fd >= 0 && !(qs->copy_buf = new_copy_buf(buf_size))) {
        *err = -ENOMEM;
        goto fail;
    }
    qs->ctx = thread_new(ops, store, err);
    if (*err)
        goto fail;
    if (helper) {
        helper_ctx = thread_new(ops, store, err);
        if (*err)
            goto fail;
        if ((*err = start_helper(qs, helper_ctx)) < 0) {
            thread_free(ops, helper_ctx);
            goto fail;
        }
        void *writer_ctx = thread_new(ops, store, err);
        if (*err)
            goto fail;
        if ((*err = start_writer(qs, writer_ctx)) < 0) {
            thread_free(ops, writer_ctx);
            goto fail;
        }
    }
    return qs;
fail:
    queue_server_free(qs);              /* what was made so far */
    return NULL;
}

void queue_server_free(struct queue_server *qs)
{
    struct helper *h = qs->helper;
    struct writer *wr = qs->writer;

    if (wr) {
        side_thread_stop(&wr->t);
        free(wr->todo);
        free(wr->done);
        free(wr);
    }

    if (h) {
        side_thread_stop(&h->t);
        free(h);
    }
    thread_free(qs->ops, qs->ctx);
    free(qs->copy_buf);
    free(qs);
}

void queue_server_set_size(struct queue_server *qs, uint64_t dev_size)
{
    __atomic_store_n(&qs->dev_size, dev_size, __ATOMIC_RELAXED);
}
