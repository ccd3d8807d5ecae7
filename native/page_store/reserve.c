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
 *
 * The reserve is counted in mem_used, and it is needed only where a
 * fault-in may wait for reclaim: when the machine's free memory nears the
 * kernel's watermarks (below the low one kswapd reclaims; below the min
 * one an allocation waits for it), or this daemon's cgroup nears its limit
 * (memory.max or memory.high). So it holds RESERVE_CHUNKS (8 MiB) while
 * the headroom -- free memory above the high watermarks, and below the
 * cgroup's limit -- is under a margin, and RESERVE_SPARE_CHUNKS (1 MiB)
 * once it is over twice that, giving the rest back. The refill thread
 * looks every RESERVE_CHECK_MS, and at every chunk taken, so that the
 * reserve is full before reclaim starts: free memory must first fall by
 * the margin. A device that swap writes to for one cgroup's reclaim only
 * (a program at its memory.max on a machine with memory to spare) keeps
 * 1 MiB.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include "internal.h"

#define RESERVE_SPARE_CHUNKS 16         /* 1 MiB while the machine has memory to spare */
#define RESERVE_MARGIN_MIN (64ull << 20)  /* headroom below this (or 1/32 of RAM) is short */
#define RESERVE_CHECK_MS 100           /* how often the refill thread looks at the headroom */
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

/* A number at the start of the file `fd` (a cgroup's memory.current or
 * memory.max), read with pread; UINT64_MAX for "max" or when unreadable. */
static uint64_t read_number(int fd)
{
    char text[32];
    ssize_t n;

    if (fd < 0 || (n = pread(fd, text, sizeof(text) - 1, 0)) <= 0 || text[0] < '0' || text[0] > '9')
        return UINT64_MAX;
    text[n] = 0;
    return strtoull(text, NULL, 10);
}

/* The sum of the zones' high watermarks, in bytes (/proc/zoneinfo). */
static uint64_t high_watermarks(void)
{
    FILE *f = fopen("/proc/zoneinfo", "re");
    char line[256];
    unsigned long long pages, sum = 0;

    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, " high %llu", &pages) == 1)
            sum += pages;
    fclose(f);
    return sum * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* This daemon's cgroup's memory.current, .max and .high, held open (cgroup
 * v2), or -1: limits of "max", or no such files, leave only the machine's.
 * Each is read once here: a file's first read allocates its buffer, which
 * it keeps (as memory_stall_us()'s). */
static void open_cgroup_memory(struct page_store *ps)
{
    char line[512], path[600];
    FILE *f = fopen("/proc/self/cgroup", "re");

    ps->cgroup_current_fd = ps->cgroup_max_fd = ps->cgroup_high_fd = -1;
    if (!f)
        return;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "0::", 3))
            continue;
        line[strcspn(line, "\n")] = 0;
        snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.max", line + 3);
        ps->cgroup_max_fd = open(path, O_RDONLY | O_CLOEXEC);
        snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.high", line + 3);
        ps->cgroup_high_fd = open(path, O_RDONLY | O_CLOEXEC);
        snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.current", line + 3);
        ps->cgroup_current_fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    fclose(f);
    read_number(ps->cgroup_max_fd);
    read_number(ps->cgroup_high_fd);
    read_number(ps->cgroup_current_fd);
}

/* Bytes free before a fault-in might wait for reclaim: the machine's free
 * memory above the high watermarks, and what the cgroup's limit leaves. */
static uint64_t headroom(const struct page_store *ps)
{
    struct sysinfo si;
    uint64_t free_bytes, room, limit, high, used, left;

    if (sysinfo(&si) < 0)
        return 0;
    free_bytes = (uint64_t)si.freeram * si.mem_unit;
    room = free_bytes > ps->watermarks ? free_bytes - ps->watermarks : 0;
    limit = read_number(ps->cgroup_max_fd);
    high = read_number(ps->cgroup_high_fd);
    if (high < limit)
        limit = high;
    used = read_number(ps->cgroup_current_fd);
    if (limit != UINT64_MAX && used != UINT64_MAX) {
        left = used < limit ? limit - used : 0;
        if (left < room)
            room = left;
    }
    return room;
}

/* Size the reserve by the headroom `room` (see the top); give back what a
 * spare reserve does not keep. alloc_lock held. */
static void size_reserve(struct page_store *ps, uint64_t room)
{
    if (room < ps->reserve_margin)
        ps->reserve_target = RESERVE_CHUNKS;
    else if (room > 2 * ps->reserve_margin)
        ps->reserve_target = RESERVE_SPARE_CHUNKS;
    while (ps->n_ready > ps->reserve_target)
        chunk_unused(ps, ps->ready[--ps->n_ready]);
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

uint32_t reserve_kept_from_moves(const struct page_store *ps)
{
    /* While memory is short, half: a refill may wait for reclaim. With
     * memory to spare a refill is quick, and the reserve small: moves leave
     * a quarter of it. */
    return ps->reserve_target == RESERVE_CHUNKS ? RESERVE_CHUNKS / 2 : RESERVE_SPARE_CHUNKS / 4;
}

bool memory_to_spare(const struct page_store *ps)
{
    return __atomic_load_n(&ps->reserve_target, __ATOMIC_RELAXED) != RESERVE_CHUNKS;
}

int reserve_refilled_for_moves(struct page_store *ps)
{
    struct timespec until;

    /* While memory is short the refill may wait for reclaim, which a move
     * must never wait for. */
    pthread_mutex_lock(&ps->alloc_lock);
    deadline_after(&until, RESERVE_STALL_MS);
    while (ps->reserve_target != RESERVE_CHUNKS && ps->n_ready <= reserve_kept_from_moves(ps) &&
           (ps->n_refilling || unused_chunks_left(ps))) {
        pthread_cond_signal(&ps->reserve_low);
        if (pthread_cond_timedwait(&ps->reserve_filled, &ps->alloc_lock, &until) == ETIMEDOUT)
            break;
    }
    int ret = ps->n_ready > reserve_kept_from_moves(ps) ? 0 : -EAGAIN;
    pthread_mutex_unlock(&ps->alloc_lock);
    return ret;
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
        struct timespec check;
        uint64_t room;

        /* Its system calls outside the lock every write's allocation takes. */
        pthread_mutex_unlock(&ps->alloc_lock);
        room = headroom(ps);
        pthread_mutex_lock(&ps->alloc_lock);
        size_reserve(ps, room);
        refill(ps);
        deadline_after(&check, RESERVE_CHECK_MS);
        if (!ps->closing && (ps->n_ready >= ps->reserve_target || !unused_chunks_left(ps)))
            pthread_cond_timedwait(&ps->reserve_low, &ps->alloc_lock, &check);
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
    pthread_cond_init(&ps->reserve_low, &monotonic);
    pthread_condattr_destroy(&monotonic);
    ps->free_chunks = reserve_array(ps->max_chunks, sizeof(*ps->free_chunks));
    ps->pressure_fd = open("/proc/pressure/memory", O_RDONLY | O_CLOEXEC);
    memory_stall_us(ps);                /* its first read allocates the file's buffer */
    ps->watermarks = high_watermarks();
    ps->reserve_margin = (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE) / 32;
    if (ps->reserve_margin < RESERVE_MARGIN_MIN)
        ps->reserve_margin = RESERVE_MARGIN_MIN;
    open_cgroup_memory(ps);
    ps->reserve_target = RESERVE_CHUNKS;
    size_reserve(ps, headroom(ps));
    ps->ready = malloc(RESERVE_CHUNKS * sizeof(*ps->ready));
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
    if (ps->cgroup_max_fd >= 0)
        close(ps->cgroup_max_fd);
    if (ps->cgroup_high_fd >= 0)
        close(ps->cgroup_high_fd);
    if (ps->cgroup_current_fd >= 0)
        close(ps->cgroup_current_fd);
}
