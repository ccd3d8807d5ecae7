/*
 * The page store's compaction: payloads moved out of sparse chunks so that
 * more chunks empty and go back.
 *
 * Swap leaves chunks sparse: it frees slots one by one (overwrites, and
 * discards of whole swap clusters), in no order the allocator could follow.
 * Kernel zram's zsmalloc is compacted by a shrinker whenever the kernel
 * reclaims; ours is compacted by the store's background (background.c), a
 * slice each period, on three rules:
 *   - while the machine reclaims, whenever a pass would give back a chunk;
 *   - when a sweep of the cold-page policy that moved pages has ended,
 *     whenever a pass would give back a chunk (those moves are the store's
 *     own doing, and the point of them is memory);
 *   - otherwise when a pass would give back 1 MiB and a sixteenth of the
 *     chunks in use (so that a quiet store is not churned for crumbs).
 * A busy device's period has no pass but while the machine reclaims; a
 * pass the period's CPU budget cuts short is owed: the next period goes on
 * whenever a pass would give back a chunk. Passes while the machine
 * reclaims are not cut: the memory is wanted now.
 *
 * A pass plans one size class at a time under alloc_lock (its chunks sorted,
 * fullest first, which is also the order new writes fill them in), then
 * moves payloads one page at a time under that page's stripe lock: the I/O
 * path waits at most for one class's plan or one page's copy. Its scratch is
 * touched before a pass takes any lock, as far as the chunks in use reach,
 * so that a pass never faults while it holds one (see the top of arena.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>

#include "internal.h"

#define COMPACT_MIN_CHUNKS  16          /* 1 MiB */
#define COMPACT_SHARE       16          /* ... and 1/16 of the chunks in use */
#define BUDGET_STRIDE       256         /* pages a pass looks at between looks at its budget */

struct compaction {
    pthread_mutex_t lock;               /* one pass at a time: the scratch is shared */
    bool owed;                          /* the last pass was cut short, or a sweep asked for one */
    uint64_t touched;                   /* chunks the scratch is faulted in for */
    uint8_t *is_source;                 /* per chunk: to be emptied this pass */
    uint32_t *plan;                     /* per class, its chunks, fullest first */
    uint32_t first[CLASS_COUNT], count[CLASS_COUNT], next[CLASS_COUNT];
};

uint64_t compaction_bytes(const struct page_store *ps)
{
    return sizeof(struct compaction) + ps->chunk_limit * (sizeof(uint8_t) + sizeof(uint32_t));
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

/* A pass, stopped once the CPU budget that ends at `cpu_until` is spent
 * (UINT64_MAX: none): the 4 KiB pages given back. */
static uint64_t compact_pass(struct page_store *ps, struct compaction *k, uint64_t cpu_until)
{
    uint64_t freed = 0, limit;
    size_t used = 0;
    bool cut = false;

    pthread_mutex_lock(&ps->alloc_lock);
    limit = ps->chunk_limit;            /* grows only */
    pthread_mutex_unlock(&ps->alloc_lock);
    touch_array(k->is_source, sizeof(*k->is_source), k->touched, limit);
    touch_array(k->plan, sizeof(*k->plan), k->touched, limit);
    k->touched = limit > k->touched ? limit : k->touched;
    memset(k->is_source, 0, limit);
    for (int cls = 0; cls < (int)CLASS_COUNT; cls++)
        used += plan_class(ps, k, cls, used, limit);
    for (uint64_t i = 0; used && i < device_pages(ps) && !cut; i++) {
        uint64_t e = __atomic_load_n(&ps->entries[i], __ATOMIC_ACQUIRE);
        if (i % BUDGET_STRIDE == BUDGET_STRIDE - 1)
            cut = budget_spent(cpu_until) || __atomic_load_n(&ps->closing_passes, __ATOMIC_RELAXED);
        if (!(e & ENTRY_STORED) || entry_chunk(e) >= limit || !k->is_source[entry_chunk(e)])
            continue;
        int cls = size_class(entry_len(e));
        if (k->count[cls])
            freed += move_page(ps, k, i, e, cls);
    }
    __atomic_store_n(&k->owed, cut, __ATOMIC_RELAXED);
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
    freed = compact_pass(ps, k, UINT64_MAX);
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

void compact_slice(struct page_store *ps, const struct period *p, bool swept)
{
    struct compaction *k = ps->compaction;
    uint64_t gain, live;
    bool eager;

    if (swept)                          /* kept across a busy period */
        __atomic_store_n(&k->owed, true, __ATOMIC_RELAXED);
    if (p->busy && !p->pressed)
        return;
    gain = chunks_to_gain(ps);
    live = __atomic_load_n(&ps->st.live_chunks, __ATOMIC_RELAXED);
    eager = p->pressed || __atomic_load_n(&k->owed, __ATOMIC_RELAXED);
    if (gain < (eager ? 1 : COMPACT_MIN_CHUNKS) || (!eager && gain * COMPACT_SHARE < live)) {
        __atomic_store_n(&k->owed, false, __ATOMIC_RELAXED);   /* nothing worth a pass is left */
        return;
    }
    if (pthread_mutex_trylock(&k->lock))
        return;                         /* a pass by hand is running */
    compact_pass(ps, k, p->pressed ? UINT64_MAX : p->cpu_until);
    pthread_mutex_unlock(&k->lock);
}

int compaction_new(struct page_store *ps)
{
    struct compaction *k = resident_calloc(1, sizeof(*k));     /* its lists are filled under alloc_lock */

    if (!k)
        return -ENOMEM;
    ps->compaction = k;
    pthread_mutex_init(&k->lock, NULL);
    k->is_source = reserve_array(ps->max_chunks, sizeof(*k->is_source));
    k->plan = reserve_array(ps->max_chunks, sizeof(*k->plan));
    return k->is_source && k->plan ? 0 : -ENOMEM;
}

void compaction_free(struct page_store *ps)
{
    struct compaction *k = ps->compaction;

    if (!k)
        return;
    pthread_mutex_lock(&k->lock);       /* a pass by hand has seen closing_passes */
    pthread_mutex_unlock(&k->lock);
    release_array(k->is_source, ps->max_chunks, sizeof(*k->is_source));
    release_array(k->plan, ps->max_chunks, sizeof(*k->plan));
    free(k);
    ps->compaction = NULL;
}
