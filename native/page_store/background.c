/*
 * The store's one background thread. Each period -- half a second -- it
 * ticks the access clock (recompress.c), then gives each kind of
 * background work a slice: recompression, writeback, compaction. The
 * rules every slice keeps are decided here, once a period:
 *   - busy: the device served more than BUSY_PAGES pages since the last
 *     period. A busy period does only the work memory is short of -- the
 *     spill near the memory limit, compaction while the machine reclaims,
 *     and the recompression of swap's pages (recompress.c) -- and counts
 *     in background_paused.
 *   - the CPU budget: a fifth of one CPU (PERIOD_CPU_NS a period). A slice
 *     stops once the period's budget is spent, after one step at least;
 *     the work memory is short of is not cut.
 *   - pressed: the machine reclaims, read from /proc/vmstat: pages scanned
 *     by reclaim or swapped out since the last look. Those counters are on
 *     every kernel and need no privilege; PSI can be built out or booted
 *     off (psi=0), and its triggers want a window of seconds from an
 *     unprivileged process.
 * The thread frees memory reclaim may be waiting for: it is an IO_FLUSHER,
 * so that its own allocations never wait on reclaim writing to this store.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "internal.h"

#define BACKGROUND_NICE 10

#define PERIOD_MS       500
#define PERIOD_CPU_NS   (100 * 1000000ull)      /* a fifth of one CPU */
#define BUSY_PAGES      64              /* served in a period: the device is busy */
#define VMSTAT_BYTES    16384

struct background {
    pthread_t thread;
    bool running;
    volatile bool stopping;
    int wake_fd;                        /* an eventfd: ps_close stops the thread at once */
    uint64_t served_seen;               /* the I/O threads' pages served at the last look */
    uint64_t reclaim_seen;              /* the vmstat counters at the last look */
    char vmstat[VMSTAT_BYTES];
};

uint64_t background_bytes(void)
{
    return sizeof(struct background);
}

static void tick_clock(struct page_store *ps)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    __atomic_store_n(&ps->now, (uint64_t)t.tv_sec + 1, __ATOMIC_RELAXED);
}

/* Whether the device served more than BUSY_PAGES pages since the last look. */
static bool device_busy(struct page_store *ps, struct background *g)
{
    uint64_t served = 0;

    pthread_mutex_lock(&ps->alloc_lock);
    for (struct ps_scratch *w = ps->scratches; w; w = w->next)
        served += __atomic_load_n(&w->pages_served, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&ps->alloc_lock);
    bool busy = served - g->served_seen > BUSY_PAGES;
    g->served_seen = served;
    return busy;
}

/* Whether the kernel has reclaimed since the last look: pages scanned by
 * the machine's reclaim (a cgroup's own reclaim is not counted there) or
 * swapped out (counted for both). */
static bool reclaiming(struct background *g)
{
    static const char *const counters[] = { "\npgscan_kswapd ", "\npgscan_direct ", "\npswpout " };
    uint64_t sum = 0;
    bool was_seen = g->reclaim_seen != 0;
    int fd = open("/proc/vmstat", O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0)
        return false;
    n = read(fd, g->vmstat + 1, sizeof(g->vmstat) - 2);
    close(fd);
    if (n <= 0)
        return false;
    g->vmstat[0] = '\n';
    g->vmstat[n + 1] = '\0';
    for (size_t i = 0; i < sizeof(counters) / sizeof(*counters); i++) {
        const char *line = strstr(g->vmstat, counters[i]);
        if (line)
            sum += strtoull(line + strlen(counters[i]), NULL, 10);
    }
    if (sum == g->reclaim_seen)
        return false;
    g->reclaim_seen = sum;
    return was_seen;
}

static void *background_main(void *arg)
{
    struct page_store *ps = arg;
    struct background *g = ps->background;
    struct pollfd wake = { .fd = g->wake_fd, .events = POLLIN };

    prctl(PR_SET_NAME, "ublk-background");
    prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0);
    /* Its work can wait; a swap-in cannot: the queue threads and the
     * programs they serve go first (this thread alone: Linux's nice is per
     * thread). */
    setpriority(PRIO_PROCESS, 0, BACKGROUND_NICE);
    reclaiming(g);
    for (;;) {
        eventfd_t woken;
        int n = poll(&wake, 1, PERIOD_MS);
        if (n > 0)
            eventfd_read(g->wake_fd, &woken);
        if (g->stopping || (n < 0 && errno != EINTR))
            break;
        uint64_t start = thread_cpu_ns();

        tick_clock(ps);
        struct period p = {
            .now = __atomic_load_n(&ps->now, __ATOMIC_RELAXED),
            .cpu_until = start + PERIOD_CPU_NS,
            .busy = device_busy(ps, g),
            .pressed = reclaiming(g),
        };
        bool swept = recompress_slice(ps, &p);
        swept |= writeback_slice(ps, &p);
        compact_slice(ps, &p, swept);

        pthread_mutex_lock(&ps->alloc_lock);
        ps->st.background_paused += p.busy;
        ps->st.background_ns += thread_cpu_ns() - start;
        pthread_mutex_unlock(&ps->alloc_lock);
    }
    return NULL;
}

int background_start(struct page_store *ps)
{
    struct background *g = calloc(1, sizeof(*g));
    int ret;

    if (!g)
        return -ENOMEM;
    ps->background = g;
    if ((g->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
        return -errno;
    tick_clock(ps);                     /* writes before the first period have a time */
    if ((ret = -pthread_create(&g->thread, NULL, background_main, ps)))
        return ret;
    g->running = true;
    return 0;
}

void background_stop(struct page_store *ps)
{
    struct background *g = ps->background;

    if (!g)
        return;
    if (g->running) {
        g->stopping = true;
        eventfd_write(g->wake_fd, 1);
        pthread_join(g->thread, NULL);
    }
    if (g->wake_fd >= 0)
        close(g->wake_fd);
    free(g);
    ps->background = NULL;
}
