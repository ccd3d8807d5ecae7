/*
 * The chunks behind the allocator: chunks never used (below chunk_limit)
 * or given back, and the reserve of free chunks already faulted in.
 *
 * Serving I/O never faults in a page (see arena.c): a write that needs a
 * new chunk takes one from the reserve, and a refill thread -- free to
 * wait for reclaim -- tops the reserve up from behind. When reclaim
 * outruns it, a write takes a larger class's free slot (put_payload());
 * only when there is none does it wait for the refill, and fails once the
 * refill is stuck: a fault-in that delivered nothing for RESERVE_STALL_MS
 * while the machine was reclaiming is waiting on reclaim, which may be
 * waiting on this write. A refill that is merely slow -- its CPU taken by
 * a loaded machine, no task stalled on memory (the kernel's pressure
 * stall information, PSI) -- cannot be waiting on us, and is waited for:
 * failing the write then would be an I/O error for nothing (seen under CI:
 * fio's writes failed on a guest with gigabytes free). A refill that has
 * not started is given up on after RESERVE_WAIT_MS of reclaim. All under
 * alloc_lock.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "internal.h"

#define RESERVE_CHUNKS  128             /* 8 MiB faulted in ahead of writes */
#define RESERVE_STALL_MS 1000          /* a fault-in this slow is stuck in reclaim */
#define RESERVE_WAIT_MS 10000          /* nor does a write wait longer for one not started */
#define NO_PSI UINT64_MAX

/* Whether a chunk never used, or given back, is left beyond the reserve. */
static bool unused_chunks_left(const struct page_store *ps)
{
    return ps->n_free_chunks || ps->chunk_high < ps->chunk_limit;
}

/* Such a chunk's number, or NO_CHUNK. */
static uint32_t unused_chunk(struct page_store *ps)
{
    if (ps->n_free_chunks)
        return ps->free_chunks[--ps->n_free_chunks];
    if (ps->chunk_high < ps->chunk_limit)
        return (uint32_t)ps->chunk_high++;
    return NO_CHUNK;                    /* fragmentation beyond the reservation */
}

/* The time tasks have stalled on memory, ever, in microseconds: PSI's
 * "some total" (Linux 4.20+), or NO_PSI where the kernel keeps none. The
 * file stays open, so that a read allocates nothing (its buffer is kept). */
static uint64_t memory_stall_us(const struct page_store *ps)
{
    char text[256];
    const char *total;
    ssize_t n;

    if (ps->pressure_fd < 0 || (n = pread(ps->pressure_fd, text, sizeof(text) - 1, 0)) <= 0)
        return NO_PSI;
    text[n] = 0;
    if (strncmp(text, "some ", 5) || !(total = strstr(text, " total=")))
        return NO_PSI;
    return strtoull(total + 7, NULL, 10);
}

static bool past(const struct timespec *deadline)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > deadline->tv_sec ||
           (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec);
}

static int wait_for_reserve(struct page_store *ps)
{
    struct timespec until, round;
    uint64_t refilled, stall_us;

    /* One write waits; while the reserve stays empty the others fail at
     * once, so that the batch completes and reclaim sees its errors soon. */
    if (ps->starved)
        return -ENOMEM;
    deadline_after(&until, RESERVE_WAIT_MS);
    pthread_cond_signal(&ps->reserve_low);
    while (!ps->n_ready && (ps->n_refilling || unused_chunks_left(ps))) {
        refilled = ps->chunks_refilled;
        stall_us = memory_stall_us(ps);
        deadline_after(&round, RESERVE_STALL_MS);
        if (pthread_cond_timedwait(&ps->reserve_filled, &ps->alloc_lock, &round) == 0 ||
            ps->chunks_refilled != refilled)
            continue;
        if (stall_us != NO_PSI && memory_stall_us(ps) == stall_us)
            continue;                   /* no reclaim: the refill is only slow */
        if (ps->n_refilling || past(&until))
            break;                      /* stuck in a fault-in: reclaim may wait for us */
    }
    ps->starved = !ps->n_ready;
    return ps->n_ready ? 0 : -ENOMEM;
}

int reserve_take(struct page_store *ps, uint32_t *chunk)
{
    if (!ps->n_ready && wait_for_reserve(ps) < 0)
        return -ENOMEM;
    *chunk = ps->ready[--ps->n_ready];
    pthread_cond_signal(&ps->reserve_low);
    return 0;
}

void reserve_give_back(struct page_store *ps, uint32_t c)
{
    if (ps->n_ready + ps->n_refilling < ps->reserve_target) {  /* faulted in: keep it */
        ps->ready[ps->n_ready++] = c;
        ps->starved = false;
        pthread_cond_broadcast(&ps->reserve_filled);
        return;
    }
    chunk_unused(ps, c);
}

void punch_hole(struct page_store *ps, uint64_t offset, uint64_t len)
{
    /* fallocate, not madvise(MADV_REMOVE): the latter refuses mlocked maps.
     * A failure only leaves memory allocated; the data stays correct. */
    fallocate(ps->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)len);
}

void chunk_unused(struct page_store *ps, uint32_t c)
{
    punch_hole(ps, chunk_offset(ps, c), CHUNK_SIZE);
    ps->free_chunks[ps->n_free_chunks++] = c;
}

void raise_chunk_limit(struct page_store *ps, uint64_t limit)
{
    uint64_t from = ps->chunk_limit;

    if (limit <= from)
        return;
    touch_array(ps->free_chunks, sizeof(*ps->free_chunks), from, limit);
    for (uint64_t c = from; c < limit; c++)
        ps->meta[c].cls = -1;
    pthread_mutex_lock(&ps->alloc_lock);
    ps->chunk_limit = limit;
    pthread_cond_signal(&ps->reserve_low);
    pthread_mutex_unlock(&ps->alloc_lock);
}

/* Fault chunks in until the reserve is full, one at a time so that each
 * helps at once. alloc_lock held on entry and exit, dropped while faulting
 * -- which may wait for reclaim, and so for this store's own writes. */
static void refill(struct page_store *ps)
{
    uint32_t c;

    while (!ps->closing && ps->n_ready + ps->n_refilling < ps->reserve_target &&
           (c = unused_chunk(ps)) != NO_CHUNK) {
        ps->n_refilling = 1;
        pthread_mutex_unlock(&ps->alloc_lock);
        populate(ps->chunks + (uint64_t)c * CHUNK_SIZE, CHUNK_SIZE);
        pthread_mutex_lock(&ps->alloc_lock);
        ps->n_refilling = 0;
        ps->chunks_refilled++;
        ps->starved = false;
        ps->ready[ps->n_ready++] = c;
        pthread_cond_broadcast(&ps->reserve_filled);
    }
}

static void *refill_main(void *arg)
{
    struct page_store *ps = arg;

    /* Realtime, so that its allocations may dip into the kernel's reserves
     * (as __GFP_HIGH ones do) and beat the workload that is pushing memory
     * out to this store. Without CAP_SYS_NICE it stays a normal thread. */
    struct sched_param realtime = { .sched_priority = 1 };

    pthread_setschedparam(pthread_self(), SCHED_FIFO, &realtime);
    prctl(PR_SET_NAME, "ublk-reserve");
    /* Writes wait for it: it must not wait on reclaim writing to us. */
    prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0);
    pthread_mutex_lock(&ps->alloc_lock);
    while (!ps->closing) {
        refill(ps);
        if (!ps->closing && (ps->n_ready >= ps->reserve_target || !unused_chunks_left(ps)))
            pthread_cond_wait(&ps->reserve_low, &ps->alloc_lock);
    }
    pthread_mutex_unlock(&ps->alloc_lock);
    return NULL;
}

int reserve_init(struct page_store *ps)
{
    pthread_condattr_t monotonic;

    pthread_condattr_init(&monotonic);
    pthread_condattr_setclock(&monotonic, CLOCK_MONOTONIC);
    pthread_cond_init(&ps->reserve_filled, &monotonic);
    pthread_cond_init(&ps->reserve_low, NULL);
    pthread_condattr_destroy(&monotonic);
    ps->free_chunks = reserve_array(ps->max_chunks, sizeof(*ps->free_chunks));
    ps->reserve_target = RESERVE_CHUNKS;
    ps->pressure_fd = open("/proc/pressure/memory", O_RDONLY | O_CLOEXEC);
    memory_stall_us(ps);                /* its first read allocates the file's buffer */
    ps->ready = malloc(ps->reserve_target * sizeof(*ps->ready));
    return ps->free_chunks && ps->ready ? 0 : -ENOMEM;
}

int reserve_start(struct page_store *ps)
{
    int ret;

    pthread_mutex_lock(&ps->alloc_lock);
    refill(ps);
    pthread_mutex_unlock(&ps->alloc_lock);
    if ((ret = -pthread_create(&ps->refill_thread, NULL, refill_main, ps)))
        return ret;
    ps->refill_running = true;
    return 0;
}

void reserve_stop(struct page_store *ps)
{
    if (ps->refill_running) {
        pthread_mutex_lock(&ps->alloc_lock);
        ps->closing = true;
        pthread_cond_signal(&ps->reserve_low);
        pthread_mutex_unlock(&ps->alloc_lock);
        pthread_join(ps->refill_thread, NULL);
    }
    release_array(ps->free_chunks, ps->max_chunks, sizeof(*ps->free_chunks));
    free(ps->ready);
    if (ps->pressure_fd >= 0)
        close(ps->pressure_fd);
}
