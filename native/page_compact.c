/*
 * The page store's compaction -- payloads moved out of sparse chunks so
 * that more chunks empty and go back -- the background thread that runs it
 * and, each period, ticks the access clock and runs a slice of the cold-page
 * policy (page_recompress.c); and the rebuild of the allocator from the page
 * map when a new I/O worker attaches to an arena.
 *
 * Swap leaves chunks sparse: it frees slots one by one (overwrites, and
 * discards of whole swap clusters), in no order the allocator could follow.
 * Kernel zram's zsmalloc is compacted by a shrinker whenever the kernel
 * reclaims; ours is compacted by a thread of the store's own, on three rules:
 *   - while the machine reclaims, whenever a pass would give back a chunk;
 *   - when a sweep of the cold-page policy that moved pages has ended,
 *     whenever a pass would give back a chunk (those moves are the store's
 *     own doing, and the point of them is memory);
 *   - otherwise when a pass would give back 1 MiB and a sixteenth of the
 *     chunks in use (so that a quiet store is not churned for crumbs).
 * "Reclaims" is read from /proc/vmstat each half second: pages scanned by
 * reclaim or swapped out since the last look. Those counters are on every
 * kernel and need no privilege; PSI can be built out or booted off (psi=0),
 * and its triggers want a window of seconds from an unprivileged process.
 *
 * A pass plans one size class at a time under alloc_lock (its chunks sorted,
 * fullest first, which is also the order new writes fill them in), then
 * moves payloads one page at a time under that page's stripe lock: the I/O
 * path waits at most for one class's plan or one page's copy. Its scratch is
 * allocated and touched when the store opens, so that a pass never faults
 * while it holds a lock (see the top of page_store.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "page_store_impl.h"

#define COMPACT_PERIOD_MS   500
#define COMPACT_MIN_CHUNKS  16          /* 1 MiB */
#define COMPACT_SHARE       16          /* ... and 1/16 of the chunks in use */
#define VMSTAT_BYTES        16384

struct compaction {
    pthread_mutex_t lock;               /* one pass at a time: the scratch is shared */
    pthread_t thread;
    bool running;
    volatile bool stopping;
    int wake_fd;                        /* an eventfd: ps_close stops the thread, a write at
                                           the memory limit starts its next period at once */
    uint64_t reclaim_seen;              /* the vmstat counters at the last look */
    uint8_t *is_source;                 /* per chunk: to be emptied this pass */
    uint32_t *plan;                     /* per class, its chunks, fullest first */
    uint32_t first[CLASS_COUNT], count[CLASS_COUNT], next[CLASS_COUNT];
    char vmstat[VMSTAT_BYTES];
};

uint64_t compaction_bytes(const struct page_store *ps)
{
    return sizeof(struct compaction) + ps->chunk_limit * (sizeof(uint8_t) + sizeof(uint32_t));
}

void compaction_grow(struct page_store *ps, uint64_t from, uint64_t to)
{
    struct compaction *k = ps->compaction;

    if (k) {                            /* else compaction_start touches them */
        touch_array(k->is_source, sizeof(*k->is_source), from, to);
        touch_array(k->plan, sizeof(*k->plan), from, to);
    }
}

/* In-place heap sort of chunk numbers by their slots in use, ascending: no
 * allocation (qsort may allocate, and this runs under alloc_lock). */
static void sift_down(uint32_t *a, size_t root, size_t n, const struct chunk_meta *meta)
{
    for (size_t child; (child = 2 * root + 1) < n; root = child) {
        if (child + 1 < n && meta[a[child + 1]].used > meta[a[child]].used)
            child++;
        if (meta[a[root]].used >= meta[a[child]].used)
            return;
        uint32_t t = a[root];
        a[root] = a[child];
        a[child] = t;
    }
}

static void sort_by_used(uint32_t *a, size_t n, const struct chunk_meta *meta)
{
    for (size_t i = n / 2; i-- > 0;)
        sift_down(a, i, n, meta);
    for (size_t end = n; end-- > 1;) {
        uint32_t t = a[0];
        a[0] = a[end];
        a[end] = t;
        sift_down(a, 0, end, meta);
    }
}

/* Plan class `cls` into plan[pos...limit): the sparsest chunks whose
 * payloads fit in the others' free room become sources; the others are its
 * targets (plan[first..first + count), sparsest first). Returns the entries
 * used. */
static size_t plan_class(struct page_store *ps, struct compaction *k, int cls, size_t pos,
                         uint64_t limit)
{
    uint32_t *list = k->plan + pos;
    size_t n = 0, lo, hi;
    uint64_t room = 0, moving = 0;
    uint32_t c;

    k->count[cls] = 0;
    pthread_mutex_lock(&ps->alloc_lock);
    /* Bounded by the room left: a chunk planned in one class may since
     * have been freed and reused by a later one. A class that does not fit
     * waits for the next pass. */
    for (c = ps->partial[cls]; c != NO_CHUNK && pos + n < limit; c = ps->meta[c].next)
        list[n++] = c;
    if (c != NO_CHUNK || n < 2 || ps->class_free[cls] < slots_per_chunk(cls)) {
        pthread_mutex_unlock(&ps->alloc_lock);
        return 0;
    }
    sort_by_used(list, n, ps->meta);
    for (lo = 0, hi = n; lo < hi; lo++) {
        while (hi > lo + 1 && room < moving + ps->meta[list[lo]].used)
            room += slots_per_chunk(cls) - ps->meta[list[--hi]].used;
        if (room < moving + ps->meta[list[lo]].used)
            break;
        moving += ps->meta[list[lo]].used;
        k->is_source[list[lo]] = 1;
    }
    /* New writes fill the fullest chunks first, the sources last. */
    ps->partial[cls] = NO_CHUNK;
    for (size_t i = 0; i < n; i++)
        list_add(ps, list[i]);
    pthread_mutex_unlock(&ps->alloc_lock);
    if (lo == 0)
        return 0;
    k->first[cls] = (uint32_t)(pos + hi);
    k->count[cls] = (uint32_t)(n - hi);
    k->next[cls] = 0;
    return n;
}

/* The next target of class `cls` with room, fullest first (alloc_lock
 * held): its chunk number, or NO_CHUNK once the class's targets are full. */
static uint32_t next_target(struct page_store *ps, struct compaction *k, int cls)
{
    const uint32_t *targets = k->plan + k->first[cls];

    for (; k->next[cls] < k->count[cls]; k->next[cls]++) {
        uint32_t c = targets[k->count[cls] - 1 - k->next[cls]];
        if (ps->meta[c].cls == cls && ps->meta[c].used < slots_per_chunk(cls))
            return c;
    }
    return NO_CHUNK;
}

/* Move page `index`'s payload (entry `e`, of class `cls` in a source chunk)
 * into one of its class's targets, unless the page changed meanwhile.
 * Returns whether that emptied its chunk. */
static bool move_page(struct page_store *ps, struct compaction *k, uint64_t index, uint64_t e,
                      int cls)
{
    uint32_t from = (uint32_t)entry_chunk(e), len = entry_len(e), slot, to;
    bool emptied = false;

    pthread_mutex_lock(stripe(ps, index));
    pthread_mutex_lock(&ps->alloc_lock);
    /* An unchanged entry still holds its slot, so its chunk is still of `cls`. */
    if (ps->entries[index] == e && (to = next_target(ps, k, cls)) != NO_CHUNK) {
        slot = take_slot(ps, to);
        copy_bytes(slot_addr(ps, to, slot), slot_addr(ps, from, entry_slot(e)), len);
        uint64_t moved = entry_stored(to, slot, len) | (e & ENTRY_FLAGS);
        if (entry_codec(e) == ENTRY_FRAME) {
            /* Every page of the frame, one at a time: each entry alone
             * points at a whole copy until the old one is freed. */
            uint64_t group = index / FRAME_PAGES * FRAME_PAGES;
            for (uint64_t i = group; i < group + FRAME_PAGES && i < ps->max_pages; i++)
                if (ps->entries[i] == e)
                    __atomic_store_n(&ps->entries[i], moved, __ATOMIC_RELEASE);
            __atomic_store_n(&ps->frames_freed, ps->frames_freed + 1, __ATOMIC_RELAXED);
        }
        __atomic_store_n(&ps->entries[index], moved, __ATOMIC_RELEASE);
        free_slot(ps, from, entry_slot(e));
        emptied = ps->meta[from].cls < 0;
    }
    pthread_mutex_unlock(&ps->alloc_lock);
    pthread_mutex_unlock(stripe(ps, index));
    return emptied;
}

static uint64_t compact_pass(struct page_store *ps, struct compaction *k)
{
    uint64_t freed = 0, limit;
    size_t used = 0;

    pthread_mutex_lock(&ps->alloc_lock);
    limit = ps->chunk_limit;            /* grows only, its scratch touched first */
    pthread_mutex_unlock(&ps->alloc_lock);
    memset(k->is_source, 0, limit);
    for (int cls = 0; cls < (int)CLASS_COUNT; cls++)
        used += plan_class(ps, k, cls, used, limit);
    for (uint64_t i = 0; used && i < ps_pages(ps) && !k->stopping; i++) {
        uint64_t e = __atomic_load_n(&ps->entries[i], __ATOMIC_ACQUIRE);
        if (!(e & ENTRY_STORED) || !k->is_source[entry_chunk(e)])
            continue;
        int cls = size_class(entry_len(e));
        if (k->count[cls])
            freed += move_page(ps, k, i, e, cls);
    }
    pthread_mutex_lock(&ps->alloc_lock);
    ps->st.pages_compacted += freed * (CHUNK_SIZE / PAGE_SIZE);
    pthread_mutex_unlock(&ps->alloc_lock);
    return freed * (CHUNK_SIZE / PAGE_SIZE);
}

uint64_t ps_compact(struct page_store *ps)
{
    struct compaction *k = ps->compaction;
    uint64_t freed;

    pthread_mutex_lock(&k->lock);
    freed = compact_pass(ps, k);
    pthread_mutex_unlock(&k->lock);
    return freed;
}

/* Chunks a perfect pass would give back: each class's free slots, packed. */
static uint64_t chunks_to_gain(const struct page_store *ps)
{
    uint64_t chunks = 0;

    for (int cls = 0; cls < (int)CLASS_COUNT; cls++)
        chunks += __atomic_load_n(&ps->class_free[cls], __ATOMIC_RELAXED) / slots_per_chunk(cls);
    return chunks;
}

/* Whether the kernel has reclaimed since the last look: pages scanned by
 * the machine's reclaim (a cgroup's own reclaim is not counted there) or
 * swapped out (counted for both). */
static bool reclaiming(struct compaction *k)
{
    static const char *const counters[] = { "\npgscan_kswapd ", "\npgscan_direct ", "\npswpout " };
    uint64_t sum = 0;
    bool was_seen = k->reclaim_seen != 0;
    int fd = open("/proc/vmstat", O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0)
        return false;
    n = read(fd, k->vmstat + 1, sizeof(k->vmstat) - 2);
    close(fd);
    if (n <= 0)
        return false;
    k->vmstat[0] = '\n';
    k->vmstat[n + 1] = '\0';
    for (size_t i = 0; i < sizeof(counters) / sizeof(*counters); i++) {
        const char *line = strstr(k->vmstat, counters[i]);
        if (line)
            sum += strtoull(line + strlen(counters[i]), NULL, 10);
    }
    if (sum == k->reclaim_seen)
        return false;
    k->reclaim_seen = sum;
    return was_seen;
}

static uint64_t thread_cpu_ns(void)
{
    struct timespec t;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void *background_main(void *arg)
{
    struct page_store *ps = arg;
    struct compaction *k = ps->compaction;
    struct pollfd wake = { .fd = k->wake_fd, .events = POLLIN };

    prctl(PR_SET_NAME, "ublk-background");
    /* It gives memory back to reclaim: it must not wait on it. */
    prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0);
    reclaiming(k);
    for (;;) {
        eventfd_t woken;
        int n = poll(&wake, 1, COMPACT_PERIOD_MS);
        if (n > 0)
            eventfd_read(k->wake_fd, &woken);
        if (k->stopping || (n < 0 && errno != EINTR))
            break;
        uint64_t start = thread_cpu_ns();

        tick_clock(ps);
        bool swept = recompress_slice(ps);
        swept |= writeback_slice(ps);
        uint64_t gain = chunks_to_gain(ps);
        uint64_t live = __atomic_load_n(&ps->st.live_chunks, __ATOMIC_RELAXED);
        bool pressed = reclaiming(k);

        if (gain >= (pressed || swept ? 1 : COMPACT_MIN_CHUNKS) && (pressed || swept || gain * COMPACT_SHARE >= live))
            ps_compact(ps);
        pthread_mutex_lock(&ps->alloc_lock);
        if (ps->spill_starved && !at_mem_limit(ps))
            ps->spill_starved = false;
        ps->background_periods++;
        pthread_cond_broadcast(&ps->reserve_filled);    /* writes waiting for spilled room */
        ps->st.background_ns += thread_cpu_ns() - start;
        pthread_mutex_unlock(&ps->alloc_lock);
    }
    return NULL;
}

int compaction_start(struct page_store *ps)
{
    struct compaction *k = calloc(1, sizeof(*k));
    int ret;

    if (!k)
        return -ENOMEM;
    ps->compaction = k;
    pthread_mutex_init(&k->lock, NULL);
    k->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    k->is_source = reserve_array(ps, sizeof(*k->is_source));
    k->plan = reserve_array(ps, sizeof(*k->plan));
    if (k->wake_fd < 0 || !k->is_source || !k->plan)
        return k->wake_fd < 0 ? -errno : -ENOMEM;
    memset(k->vmstat, 0, sizeof(k->vmstat));
    compaction_grow(ps, 0, ps->chunk_limit);
    if ((ret = -pthread_create(&k->thread, NULL, background_main, ps)))
        return ret;
    k->running = true;
    return 0;
}

void background_wake(struct page_store *ps)
{
    if (ps->compaction && ps->compaction->running)
        eventfd_write(ps->compaction->wake_fd, 1);
}

void compaction_stop(struct page_store *ps)
{
    struct compaction *k = ps->compaction;

    if (!k)
        return;
    if (k->running) {
        k->stopping = true;
        eventfd_write(k->wake_fd, 1);
        pthread_join(k->thread, NULL);
    }
    if (k->wake_fd >= 0)
        close(k->wake_fd);
    release_array(ps, k->is_source, sizeof(*k->is_source));
    release_array(ps, k->plan, sizeof(*k->plan));
    free(k);
    ps->compaction = NULL;
}

/* Whether frame entry `e` of page `index` was met already, at an earlier
 * page of its group. */
static bool frame_seen(const struct page_store *ps, uint64_t index, uint64_t e)
{
    for (uint64_t i = index / FRAME_PAGES * FRAME_PAGES; i < index; i++)
        if (ps->entries[i] == e)
            return true;
    return false;
}

/* Rebuild the allocator from the entries a previous I/O worker left. */
int rebuild(struct page_store *ps)
{
    uint8_t **used_slots = calloc(ps->max_chunks, sizeof(*used_slots));
    int ret = -ENOMEM;

    if (!used_slots)
        goto out;
    ret = -EUCLEAN;
    for (uint64_t i = 0; i < ps->pages; i++) {
        uint64_t e = ps->entries[i];
        if (!e)
            continue;
        ps->st.pages_stored++;
        if (entry_backed(e))
            continue;                   /* its block: ps_set_backing */
        if (e & ENTRY_SAME) {
            ps->st.same_pages++;
            continue;
        }
        uint64_t c = entry_chunk(e);
        uint32_t slot = entry_slot(e), len = entry_len(e);
        int cls = size_class(len);
        bool frame = entry_codec(e) == ENTRY_FRAME;
        if (!(e & ENTRY_STORED) || c >= ps->max_chunks || slot >= slots_per_chunk(cls) ||
            (frame && (len <= FRAME_HEADER || (e & ENTRY_PADDED))))
            goto out;
        if (frame) {
            ps->st.recompressed_pages++;
            ps->st.frame_pages++;
            if (frame_seen(ps, i, e))
                continue;               /* its slot is counted with the frame's first page */
        }
        if (!used_slots[c]) {
            /* A chunk past this size's limit: the device was larger. */
            raise_chunk_limit(ps, c + 1);
            if (!(used_slots[c] = calloc(slots_per_chunk(cls), 1))) {
                ret = -ENOMEM;
                goto out;
            }
            ps->meta[c].cls = (int16_t)cls;
        }
        if (ps->meta[c].cls != cls || used_slots[c][slot])
            goto out;               /* two classes in a chunk, or a slot twice */
        used_slots[c][slot] = 1;
        ps->meta[c].used++;
        ps->st.compr_data_size += len;
        if (frame) {
            ps->st.frames++;
            ps->st.frame_bytes += len;
            ps->st.recompressed_bytes += len;
        } else if (e & ENTRY_CODEC) {
            ps->st.recompressed_pages++;
            ps->st.recompressed_bytes += len;
        }
        ps->st.huge_pages += !frame && len == PAGE_SIZE;
        if (c + 1 > ps->chunk_high)
            ps->chunk_high = c + 1;
    }
    /* The old worker's reserve lay past its last chunk in use. */
    punch_hole(ps, (uint64_t)(ps->chunks - ps->base) + ps->chunk_high * CHUNK_SIZE,
               (ps->max_chunks - ps->chunk_high) * CHUNK_SIZE);
    for (uint64_t c = ps->chunk_high; c-- > 0;) {
        struct chunk_meta *m = &ps->meta[c];
        if (!used_slots[c]) {
            punch_hole(ps, (uint64_t)(ps->chunks - ps->base) + c * CHUNK_SIZE, CHUNK_SIZE);
            ps->free_chunks[ps->n_free_chunks++] = (uint32_t)c;
            continue;
        }
        uint32_t slots = slots_per_chunk(m->cls), bump = slots;
        /* Slots past the last used one stay unhanded (and untouched). */
        while (!used_slots[c][bump - 1])
            bump--;
        m->bump = (uint16_t)bump;
        for (uint32_t s = bump; s-- > 0;) {
            if (used_slots[c][s])
                continue;
            memcpy(slot_addr(ps, c, s), &m->free_head, sizeof(m->free_head));
            m->free_head = (uint16_t)(s + 1);
        }
        ps->st.live_chunks++;
        ps->class_free[m->cls] += slots - m->used;
        if (m->used < slots)
            list_add(ps, (uint32_t)c);
    }
    ps->st.peak_live_chunks = ps->st.live_chunks;
    ret = 0;
out:
    if (used_slots)
        for (uint64_t c = 0; c < ps->chunk_high; c++)
            free(used_slots[c]);
    free(used_slots);
    return ret;
}
