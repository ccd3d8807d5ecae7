/*
 * The backing device: pages written out of RAM to a block device, as
 * zram's backing_dev, so that their memory goes back at once.
 *
 * A page written back keeps its place in the page map: its entry becomes
 * ENTRY_BACKED with the device block (4 KiB, the page itself, uncompressed:
 * a read is then one direct read, as zram's). Which blocks are in use is
 * known only from the entries, so a new I/O worker rebuilds the free map
 * from them (ps_set_backing) and a worker killed during a writeback leaks
 * no block: a block is counted once its page's entry names it, and until
 * then it was only written, never published.
 *
 * A writeback copies a batch of pages out under their stripe locks, writes
 * the batch with no lock held (one write per run of neighbouring blocks),
 * then publishes each page whose entry did not change meanwhile; a page
 * rewritten in between keeps its new data and its block is freed. A write
 * the device fails leaves every page of the batch in RAM. Blocks are taken
 * and freed under alloc_lock, as slots are.
 *
 * Reads of written-back pages happen on the I/O path: the device is another
 * device than this one, so its reads never wait on this store's reclaim. A
 * request's neighbouring pages of one group on neighbouring blocks (as a
 * writeback leaves them) are read with one read, as are pages of the zram
 * tier at neighbouring offsets.
 * Writebacks are background work (their caller is an IO_FLUSHER thread).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "page_store_impl.h"

#define BITS 64u
#define SLICE_PAGES     65536           /* entries a background period looks at */
#define SLICE_MAX_PAGES 4096            /* pages it writes back: 16 MiB */
#define SPILL_SHARE     8               /* spill from 7/8 of the memory limit up */
#define SPILL_PAGES     4096            /* pages a period spills */
#define SPILL_PERIODS   2               /* a write at the limit waits for this many periods to end */
#define SPILL_WAIT_MS   5000            /* ... and never longer than this */
#define AGE_BUCKETS     34              /* idle 0 s, [1, 2), [2, 4) ... [2^32, ...), marked */
#define RUN_GROUPS      32              /* groups one read spans past the first: 1 MiB requests */

_Static_assert(RUN_GROUPS < LOCK_STRIPES, "a read's groups must have distinct stripe locks");

static bool block_used(const struct backing *b, uint64_t block)
{
    return b->used[block / BITS] >> (block % BITS) & 1;
}

static void mark_block(struct backing *b, uint64_t block, bool used)
{
    if (used)
        b->used[block / BITS] |= 1ull << (block % BITS);
    else
        b->used[block / BITS] &= ~(1ull << (block % BITS));
}

/* A free block, the first at or after the last one taken (runs of writes
 * stay neighbours), or UINT64_MAX when the device is full. alloc_lock held. */
static uint64_t take_block(struct page_store *ps)
{
    struct backing *b = ps->backing;
    uint64_t words = (b->blocks + BITS - 1) / BITS;

    if (ps->st.bd_count >= b->blocks)
        return UINT64_MAX;
    /* A word at a time: a nearly full device costs a 64th of its blocks. */
    for (uint64_t n = 0; n <= words; n++) {
        uint64_t w = (b->next / BITS + n) % words;
        uint64_t free_bits = ~b->used[w];
        if (n == 0)                     /* the first word: from b->next on */
            free_bits &= ~0ull << (b->next % BITS);
        if (!free_bits)
            continue;
        uint64_t block = w * BITS + (uint64_t)__builtin_ctzll(free_bits);
        if (block >= b->blocks)
            continue;                   /* past the last block, in the last word */
        mark_block(b, block, true);
        b->next = block + 1 < b->blocks ? block + 1 : 0;
        ps->st.bd_count++;
        return block;
    }
    return UINT64_MAX;
}

void free_block(struct page_store *ps, uint64_t block)
{
    struct backing *b = ps->backing;

    if (b && block < b->blocks && block_used(b, block)) {
        mark_block(b, block, false);
        ps->st.bd_count--;
    }
}

int read_backed(struct ps_scratch *w, uint64_t e, void *dest)
{
    struct page_store *ps = w->ps;
    struct backing *b = ps->backing;
    uint64_t block = entry_block(e);

    if (!b || block >= b->blocks) {
        __atomic_fetch_add(&ps->st.bd_read_errors, 1, __ATOMIC_RELAXED);
        return -EIO;
    }
    /* O_DIRECT wants an aligned buffer: the scratch page is one. */
    if (pread(b->fd, w->page, PAGE_SIZE, (off_t)(block * PAGE_SIZE)) != PAGE_SIZE) {
        __atomic_fetch_add(&ps->st.bd_read_errors, 1, __ATOMIC_RELAXED);
        return -EIO;
    }
    __atomic_fetch_add(&ps->st.bd_reads, 1, __ATOMIC_RELAXED);
    if (dest != w->page)
        copy_bytes(dest, w->page, PAGE_SIZE);
    return 0;
}

int read_outside_run(struct ps_scratch *w, uint64_t index, uint32_t max_pages, void *dest)
{
    struct page_store *ps = w->ps;
    uint64_t e = ps->entries[index];
    bool zram = entry_in_zram(e);
    uint64_t first = zram ? index : entry_block(e), *errors, *reads;
    pthread_mutex_t *held[RUN_GROUPS];
    uint32_t n = 1, locked = 0;
    int fd, ret = 0;

    if ((uintptr_t)dest % PAGE_SIZE || !entry_backed(e))
        return 0;
    /* The next pages on the next blocks, past the caller's group too: each
     * further group's stripe is only tried, never waited for (a writer
     * holding it stops the run there), so no two locks are ever awaited. */
    while (n < max_pages) {
        if ((index + n) % FRAME_PAGES == 0) {
            pthread_mutex_t *lock = stripe(ps, index + n);
            if (locked == RUN_GROUPS || pthread_mutex_trylock(lock))
                break;
            held[locked++] = lock;
        }
        uint64_t next = ps->entries[index + n];
        if (zram ? !entry_in_zram(next) : !entry_backed(next) || entry_in_zram(next) ||
                                           entry_block(next) != first + n)
            break;
        n++;
    }
    if (n > 1) {                        /* (one page is load_page's to read) */
        fd = zram ? ps->zram_fd : ps->backing ? ps->backing->fd : -1;
        errors = zram ? &ps->st.zram_read_errors : &ps->st.bd_read_errors;
        reads = zram ? &ps->st.zram_reads : &ps->st.bd_reads;
        if (fd < 0 || (!zram && first + n > ps->backing->blocks) ||
            pread(fd, dest, (size_t)n * PAGE_SIZE, (off_t)(first * PAGE_SIZE)) != (ssize_t)n * PAGE_SIZE) {
            __atomic_fetch_add(errors, 1, __ATOMIC_RELAXED);
            ret = -EIO;
        } else {
            __atomic_fetch_add(reads, n, __ATOMIC_RELAXED);
            ret = (int)n;
        }
    }
    while (locked)
        pthread_mutex_unlock(held[--locked]);
    return ret;
}

int ps_set_backing(struct page_store *ps, int fd, uint64_t blocks)
{
    struct backing *b;
    int ret = 0;

    if (ps->backing)
        return -EBUSY;
    if (!blocks || blocks > ENTRY_BLOCK_MASK)
        return -EINVAL;
    if (!(b = calloc(1, sizeof(*b))))
        return -ENOMEM;
    b->fd = fd;
    b->blocks = blocks;
    b->used = calloc((blocks + BITS - 1) / BITS, sizeof(uint64_t));
    b->batch = aligned_alloc(PAGE_SIZE, PS_WRITEBACK_BATCH * PAGE_SIZE);
    b->scratch = scratch_new(ps, ps->codec, ps->level);
    if (!b->used || !b->batch || !b->scratch) {
        ret = -ENOMEM;
        goto fail;
    }
    pthread_mutex_init(&b->lock, NULL);
    pthread_mutex_lock(&ps->alloc_lock);
    ps->st.bd_count = 0;
    for (uint64_t i = 0; i < ps->max_pages && !ret; i++) {
        uint64_t e = ps->entries[i];
        if (!entry_backed(e) || entry_in_zram(e))
            continue;
        /* Another device than the one written to, or two pages on one block. */
        if (entry_block(e) >= blocks || block_used(b, entry_block(e)))
            ret = -EUCLEAN;
        else
            mark_block(b, entry_block(e), true), ps->st.bd_count++;
    }
    ps->st.bd_blocks = ret ? 0 : blocks;
    if (!ret)                           /* the background reads it without the lock */
        __atomic_store_n(&ps->backing, b, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&ps->alloc_lock);
    if (!ret)
        return 0;
    pthread_mutex_destroy(&b->lock);
fail:
    if (b->scratch)
        ps_scratch_free(b->scratch);
    free(b->batch);
    free(b->used);
    free(b);
    return ret;
}

void backing_free(struct page_store *ps)
{
    struct backing *b = ps->backing;

    if (!b)
        return;
    pthread_mutex_destroy(&b->lock);
    ps_scratch_free(b->scratch);
    free(b->batch);
    free(b->used);
    free(b);
    ps->backing = NULL;
}

void ps_set_writeback_limit(struct page_store *ps, int enabled, uint64_t pages)
{
    pthread_mutex_lock(&ps->alloc_lock);
    ps->writeback_limit_enabled = enabled;
    ps->writeback_limit = pages;
    pthread_mutex_unlock(&ps->alloc_lock);
}

uint64_t ps_writeback_limit(struct page_store *ps)
{
    return __atomic_load_n(&ps->writeback_limit, __ATOMIC_RELAXED);
}

/* Whether stored entry `e`, last accessed at `atime`, is one of `type`. */
static bool writeback_wanted(uint64_t e, uint64_t atime, int type, uint64_t now, uint32_t age)
{
    if (!(e & ENTRY_STORED))
        return false;
    switch (type) {
    case PS_WRITEBACK_IDLE:                 /* age 0: marked idle only */
        return atime == 0 || (age && is_idle(atime, now, age));
    case PS_WRITEBACK_HUGE:
        return entry_codec(e) != ENTRY_FRAME && entry_len(e) == PAGE_SIZE && !(e & ENTRY_PADDED);
    case PS_WRITEBACK_INCOMPRESSIBLE:      /* raw for its entropy, or no codec shrank it */
        return entry_codec(e) != ENTRY_FRAME && entry_len(e) == PAGE_SIZE && !(e & ENTRY_PADDED)
               && (e & ENTRY_SETTLED);
    default:
        return true;
    }
}

/* Copy page `index` (entry `e`) into the batch, decoded; its stripe lock
 * held. Reads it without counting an access: written back, not used. */
static int copy_out(struct page_store *ps, struct ps_scratch *w, uint64_t index, uint64_t e, char *dest)
{
    if (entry_codec(e) == ENTRY_FRAME)
        return load_frame(w, index, e, dest);
    return decode_payload(w, e, slot_addr(ps, entry_chunk(e), entry_slot(e)), dest);
}

/* Write the batch's pages [0, n) to their blocks, one write per run of
 * neighbouring blocks: 0 or -EIO. */
static int write_batch(struct backing *b, uint32_t n)
{
    for (uint32_t i = 0, end; i < n; i = end) {
        for (end = i + 1; end < n && b->block[end] == b->block[end - 1] + 1; end++)
            ;
        size_t len = (size_t)(end - i) * PAGE_SIZE;
        if (pwrite(b->fd, b->batch + (size_t)i * PAGE_SIZE, len, (off_t)(b->block[i] * PAGE_SIZE))
            != (ssize_t)len)
            return -EIO;
    }
    return 0;
}

/* Publish the written batch: each page whose entry is still the one
 * copied takes its block; the others' blocks go back. */
static uint64_t publish_batch(struct page_store *ps, struct backing *b, uint32_t n, int written)
{
    uint64_t done = 0;

    for (uint32_t i = 0; i < n; i++) {
        pthread_mutex_t *lock = stripe(ps, b->index[i]);
        bool locked = pthread_mutex_trylock(lock) == 0;     /* in use: it stays in RAM */
        pthread_mutex_lock(&ps->alloc_lock);
        if (locked && written == 0 && ps->entries[b->index[i]] == b->entry[i]) {
            publish(ps, b->index[i], entry_backed_at(b->block[i]));
            ps->st.bd_writes++;
            done++;
        } else {
            free_block(ps, b->block[i]);
        }
        pthread_mutex_unlock(&ps->alloc_lock);
        if (locked)
            pthread_mutex_unlock(lock);
    }
    return done;
}

/* Write back pages of `type` in [*cursor, end), up to `max_pages`, batch
 * by batch; *cursor ends where it stopped. b->lock held. 0, or -EIO. */
static int writeback_range(struct page_store *ps, int type, uint32_t age, uint64_t *cursor, uint64_t end,
                           uint64_t max_pages, uint64_t *done, bool *full)
{
    struct backing *b = ps->backing;
    uint64_t now = __atomic_load_n(&ps->now, __ATOMIC_RELAXED);
    uint64_t i = *cursor;
    int ret = 0;

    while (i < end && *done < max_pages && !ret && !*full) {
        uint32_t n = 0;

        /* Gather a batch: pages of the type, each with a block. */
        for (; i < end && n < PS_WRITEBACK_BATCH && *done + n < max_pages && !*full; i++) {
            uint64_t e = __atomic_load_n(&ps->entries[i], __ATOMIC_RELAXED);
            if (!writeback_wanted(e, __atomic_load_n(&ps->fills[i], __ATOMIC_RELAXED), type, now, age))
                continue;
            pthread_mutex_t *lock = stripe(ps, i);
            if (pthread_mutex_trylock(lock))
                continue;               /* in use now: not cold, and never waited for */
            e = ps->entries[i];
            if (writeback_wanted(e, ps->fills[i], type, now, age)) {
                pthread_mutex_lock(&ps->alloc_lock);
                uint64_t block = ps->writeback_limit_enabled && ps->writeback_limit <= n
                                 ? UINT64_MAX : take_block(ps);
                pthread_mutex_unlock(&ps->alloc_lock);
                if (block == UINT64_MAX) {
                    *full = true;
                    i--;                /* this page is still to do */
                } else if (copy_out(ps, b->scratch, i, e, b->batch + (size_t)n * PAGE_SIZE) == 0) {
                    b->index[n] = i;
                    b->entry[n] = e;
                    b->block[n++] = block;
                } else {
                    pthread_mutex_lock(&ps->alloc_lock);
                    free_block(ps, block);
                    pthread_mutex_unlock(&ps->alloc_lock);
                }
            }
            pthread_mutex_unlock(lock);
        }
        if (n) {
            int written = write_batch(b, n);
            uint64_t moved = publish_batch(ps, b, n, written);
            pthread_mutex_lock(&ps->alloc_lock);
            if (written)
                ps->st.bd_write_errors++;
            if (ps->writeback_limit_enabled)
                ps->writeback_limit -= moved < ps->writeback_limit ? moved : ps->writeback_limit;
            pthread_mutex_unlock(&ps->alloc_lock);
            *done += moved;
            ret = written;
        }
    }
    *cursor = i;
    return ret;
}

int ps_writeback(struct page_store *ps, int type, uint32_t age_seconds, uint64_t max_pages, uint64_t *done)
{
    struct backing *b = ps->backing;
    uint64_t cursor = 0;
    bool full = false;
    int ret;

    *done = 0;
    if (!b)
        return -ENODEV;
    if (type < 0 || type > PS_WRITEBACK_ALL)
        return -EINVAL;
    /* It frees memory reclaim may be waiting for: it must not wait on it. */
    prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0);
    pthread_mutex_lock(&b->lock);              /* one writeback at a time */
    ret = writeback_range(ps, type, age_seconds, &cursor, ps_pages(ps), max_pages, done, &full);
    pthread_mutex_unlock(&b->lock);
    return ret;
}

int wait_for_spill(struct page_store *ps)
{
    struct backing *b = ps->backing;
    struct timespec until;
    int ret = -ENOSPC;

    deadline_after(&until, SPILL_WAIT_MS);
    pthread_mutex_lock(&ps->alloc_lock);
    /* Only with a device that has room; while a wait has timed out the
     * others fail at once, as for the reserve. The background's periods
     * take what they take (seconds under emulation): the write waits for
     * one to run whole after it asked, not for a fixed time. */
    if (b && !ps->spill_starved && ps->st.bd_count < b->blocks) {
        uint64_t until_period = ps->background_periods + SPILL_PERIODS;
        background_wake(ps);
        while (at_mem_limit(ps) && ps->background_periods < until_period)
            if (pthread_cond_timedwait(&ps->reserve_filled, &ps->alloc_lock, &until))
                break;
        ps->spill_starved = at_mem_limit(ps);
        ret = ps->spill_starved ? -ENOSPC : 0;
    }
    pthread_mutex_unlock(&ps->alloc_lock);
    return ret;
}

void ps_set_writeback_after(struct page_store *ps, uint32_t after_seconds)
{
    __atomic_store_n(&ps->writeback_after, after_seconds, __ATOMIC_RELAXED);
}

/* The idle age from which the coldest `want` stored pages on are taken,
 * in powers of two seconds (0: any page, hot ones too): one look at every
 * page's access time. */
static uint32_t spill_age(struct page_store *ps, uint64_t pages, uint64_t want)
{
    uint64_t now = __atomic_load_n(&ps->now, __ATOMIC_RELAXED), count[AGE_BUCKETS] = { 0 }, sum = 0;

    for (uint64_t i = 0; i < pages; i++) {
        if (!(__atomic_load_n(&ps->entries[i], __ATOMIC_RELAXED) & ENTRY_STORED))
            continue;
        uint64_t atime = __atomic_load_n(&ps->fills[i], __ATOMIC_RELAXED);
        uint64_t age = atime <= now ? now - atime : 0;
        uint64_t k = age ? 64 - (uint64_t)__builtin_clzll(age) : 0;
        count[atime == 0 ? AGE_BUCKETS - 1 : k < AGE_BUCKETS - 2 ? k : AGE_BUCKETS - 2]++;
    }
    /* Bucket k > 0 holds ages from 2^(k-1) on; the last, the pages marked
     * idle, which is_idle takes at any age. */
    for (int k = AGE_BUCKETS - 1; k > 0; k--)
        if ((sum += count[k]) >= want)
            return k == AGE_BUCKETS - 1 ? UINT32_MAX : 1u << (k - 1);
    return 0;
}

/* Whether the store holds more than SPILL_AT of its memory limit. */
static bool near_mem_limit(struct page_store *ps)
{
    uint64_t limit = __atomic_load_n(&ps->mem_limit, __ATOMIC_RELAXED);

    return limit && __atomic_load_n(&ps->st.live_chunks, __ATOMIC_RELAXED) * CHUNK_SIZE
                    >= limit / SPILL_SHARE * (SPILL_SHARE - 1);
}

bool writeback_slice(struct page_store *ps)
{
    struct backing *b = __atomic_load_n(&ps->backing, __ATOMIC_ACQUIRE);
    uint32_t after = __atomic_load_n(&ps->writeback_after, __ATOMIC_RELAXED);
    uint64_t pages = ps_pages(ps), done = 0, end;
    bool full = false, spill;

    if (!b || pthread_mutex_trylock(&b->lock))
        return false;                   /* none, or a writeback by hand is running */
    spill = near_mem_limit(ps);
    if (b->cursor >= pages)
        b->cursor = 0;
    end = b->cursor + SLICE_PAGES < pages ? b->cursor + SLICE_PAGES : pages;
    if (spill) {
        /* Near the memory limit: out with the coldest pages first, so that
         * writes find room (then compaction gives the chunks back). */
        uint32_t age = spill_age(ps, pages, SPILL_PAGES);
        uint64_t cursor = 0;
        writeback_range(ps, age ? PS_WRITEBACK_IDLE : PS_WRITEBACK_ALL, age, &cursor, pages, SPILL_PAGES,
                        &done, &full);
    } else if (after) {
        uint64_t from = b->cursor;
        writeback_range(ps, PS_WRITEBACK_IDLE, after, &from, end, SLICE_MAX_PAGES, &done, &full);
        from = b->cursor;
        writeback_range(ps, PS_WRITEBACK_INCOMPRESSIBLE, 0, &from, end, SLICE_MAX_PAGES, &done, &full);
        b->cursor = end;
    }
    pthread_mutex_unlock(&b->lock);
    return done > 0;
}
