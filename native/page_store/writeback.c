/*
 * Writeback: pages written out of RAM to the backing device (backing.c),
 * by hand (ps_writeback, as zram's writeback attribute) and by the
 * background: pages idle writeback_after and incompressible ones, and,
 * near the memory limit, the coldest pages spilled so that writes find
 * room.
 *
 * A writeback copies a batch of pages out under their stripe locks -- a
 * compressed page's payload as it is, packed (backing.c), a raw one whole
 * -- writes the batch with no lock held (one write per run of neighbouring
 * blocks), then publishes each page whose entry did not change meanwhile;
 * a page rewritten in between keeps its new data, and a block left with
 * no page or record is freed. A write the device fails leaves every page
 * of the batch in RAM.
 * Writebacks are background work (their caller is an IO_FLUSHER thread).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "internal.h"

#define SLICE_MAX_PAGES 4096            /* pages a period writes back: 16 MiB */
#define SPILL_SHARE     8               /* spill from 7/8 of the memory limit up */
#define SPILL_PAGES     4096            /* pages a period spills */
#define AGE_BUCKETS     34              /* idle 0 s, [1, 2), [2, 4) ... [2^32, ...), marked */

void ps_set_writeback_limit(struct page_store *ps, int enabled, uint64_t pages)
{
    pthread_mutex_lock(&ps->alloc_lock);
    ps->writeback_limit_enabled = enabled;
    ps->writeback_limit = pages;
    pthread_mutex_unlock(&ps->alloc_lock);
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

/* The payload stored entry `e` would be packed as: where, how long, its
 * codec (ENTRY_LZ4, ENTRY_ZSTD or ENTRY_FRAME); false for a page stored
 * raw, which goes whole. */
static bool packable(struct page_store *ps, uint64_t e, const char **payload, uint16_t *len, unsigned *codec)
{
    const char *at = slot_addr(ps, entry_chunk(e), entry_slot(e));
    uint32_t n = entry_len(e);

    if (e & ENTRY_PADDED) {
        uint16_t inner;
        memcpy(&inner, at, sizeof(inner));
        if (inner == 0 || inner + sizeof(inner) > n)
            return false;               /* left for copy_out to report */
        at += sizeof(inner);
        n = inner;
    } else if (n == PAGE_SIZE) {
        return false;
    }
    if (round_up(n + sizeof(*len), 16) > PAGE_SIZE)
        return false;
    *payload = at;
    *len = (uint16_t)n;
    *codec = entry_codec(e) ? entry_codec(e) : entry_codec_of(ps->codec);
    return true;
}

/* A batch being filled: its pages and blocks so far, and the block records
 * are packed into (-1: none) with the bytes of it they fill. */
struct batch {
    uint32_t pages, blocks, fill;
    int open;
};

/* Whether the batch's pages have reached the writeback limit. */
static bool at_writeback_limit(struct page_store *ps, const struct batch *bt)
{
    pthread_mutex_lock(&ps->alloc_lock);
    bool reached = ps->writeback_limit_enabled && ps->writeback_limit <= bt->pages;
    pthread_mutex_unlock(&ps->alloc_lock);
    return reached;
}

/* A free block for the batch, or UINT64_MAX: the device is full. */
static uint64_t batch_block(struct page_store *ps)
{
    pthread_mutex_lock(&ps->alloc_lock);
    uint64_t block = take_block(ps);
    pthread_mutex_unlock(&ps->alloc_lock);
    return block;
}

/* Put page `index` (stored entry `e`, its stripe lock held) in the batch:
 * its payload's record packed after the last one's (a frame's pages
 * share one; a record straddles into the next block when that is the
 * device's next), or the page whole in a block of its own. 0: put; 1: the
 * batch is full; -ENOSPC: the device is full, or the writeback limit
 * reached; -EIO: it did not decode, and stays in RAM. */
static int add_page(struct page_store *ps, struct backing *b, struct batch *bt, uint64_t index, uint64_t e)
{
    const char *payload = NULL;
    uint16_t len = 0;
    unsigned codec = 0;
    bool pack = packable(ps, e, &payload, &len, &codec);
    uint32_t k = bt->pages, span = pack ? (uint32_t)round_up(len + sizeof(len), 16) : PAGE_SIZE;
    uint64_t at = 0, block;
    char *dest = NULL;

    if (k == WRITEBACK_PAGES)
        return 1;
    if (at_writeback_limit(ps, bt))
        return -ENOSPC;
    if (pack && codec == ENTRY_FRAME && k && b->entry[k - 1] == e) {
        b->to[k] = b->to[k - 1];
    } else if (pack && bt->open >= 0 && bt->fill + span <= PAGE_SIZE) {
        at = b->block[bt->open] * PAGE_SIZE + bt->fill;
        dest = b->batch + (size_t)bt->open * PAGE_SIZE + bt->fill;
        bt->fill += span;
    } else {
        if (bt->blocks == PS_WRITEBACK_BATCH)
            return 1;
        if ((block = batch_block(ps)) == UINT64_MAX)
            return -ENOSPC;
        uint32_t j = bt->blocks++;
        b->block[j] = block;
        b->packs[j] = pack;
        if (!pack) {
            if (copy_out(ps, b->scratch, index, e, b->batch + (size_t)j * PAGE_SIZE) < 0) {
                bt->blocks--;
                pthread_mutex_lock(&ps->alloc_lock);
                free_block(ps, block);
                pthread_mutex_unlock(&ps->alloc_lock);
                return -EIO;
            }
            b->to[k] = entry_backed_at(block);
        } else if (bt->open >= 0 && j == (uint32_t)bt->open + 1 && block == b->block[bt->open] + 1 &&
                   bt->fill < PAGE_SIZE) {
            at = b->block[bt->open] * PAGE_SIZE + bt->fill;
            dest = b->batch + (size_t)bt->open * PAGE_SIZE + bt->fill;
            bt->fill += span - PAGE_SIZE;
            bt->open = (int)j;
        } else {
            at = block * PAGE_SIZE;
            dest = b->batch + (size_t)j * PAGE_SIZE;
            bt->fill = span;
            bt->open = (int)j;
        }
    }
    if (dest) {
        memcpy(dest, &len, sizeof(len));
        copy_bytes(dest + sizeof(len), payload, len);
        b->to[k] = entry_packed_at(codec, at, span);
    }
    b->index[k] = index;
    b->entry[k] = e;
    bt->pages++;
    return 0;
}

/* Write the batch's blocks, one write per run of neighbouring ones: 0 or
 * -EIO. */
static int write_batch(struct backing *b, uint32_t n)
{
    for (uint32_t i = 0, end; i < n; i = end) {
        for (end = i + 1; end < n && b->block[end] == b->block[end - 1] + 1; end++)
            ;
        size_t len = (size_t)(end - i) * PAGE_SIZE;
        ssize_t done = pwrite(b->fd, b->batch + (size_t)i * PAGE_SIZE, len, (off_t)(b->block[i] * PAGE_SIZE));
        /* Blocks read ahead before it are stale (read_record()). */
        __atomic_fetch_add(&b->writes, 1, __ATOMIC_RELEASE);
        if (done != (ssize_t)len)
            return -EIO;
    }
    return 0;
}

/* Publish the written batch: each page whose entry is still the one
 * copied takes its block or record; the blocks left without a page or a
 * record go back. */
static uint64_t publish_batch(struct page_store *ps, struct backing *b, const struct batch *bt, int written)
{
    uint64_t done = 0, counted = 0;

    for (uint32_t i = 0; i < bt->pages; i++) {
        pthread_mutex_t *lock = stripe(ps, b->index[i]);
        bool locked = pthread_mutex_trylock(lock) == 0;     /* in use: it stays in RAM */
        pthread_mutex_lock(&ps->alloc_lock);
        if (locked && written == 0 && ps->entries[b->index[i]] == b->entry[i]) {
            publish(ps, b->index[i], b->to[i]);
            if (entry_packed(b->to[i]) && b->to[i] != counted)
                count_record(ps, counted = b->to[i], 1);    /* a frame's pages: one record */
            ps->st.bd_writes++;
            done++;
        } else if (!entry_packed(b->to[i])) {
            free_block(ps, entry_block(b->to[i]));
        }
        pthread_mutex_unlock(&ps->alloc_lock);
        if (locked)
            pthread_mutex_unlock(lock);
    }
    pthread_mutex_lock(&ps->alloc_lock);
    for (uint32_t j = 0; j < bt->blocks; j++)
        if (b->packs[j] && !b->records[b->block[j]])
            free_block(ps, b->block[j]);
    pthread_mutex_unlock(&ps->alloc_lock);
    return done;
}

/* Write back pages of `type` in [*cursor, end), up to `max_pages`, batch
 * by batch, until the CPU budget that ends at `cpu_until` is spent
 * (UINT64_MAX: none); *cursor ends where it stopped. b->lock held. 0, or
 * -EIO. */
static int writeback_range(struct page_store *ps, int type, uint32_t age, uint64_t *cursor, uint64_t end,
                           uint64_t max_pages, uint64_t cpu_until, uint64_t *done, bool *full)
{
    struct backing *b = ps->backing;
    uint64_t now = __atomic_load_n(&ps->now, __ATOMIC_RELAXED);
    uint64_t i = *cursor;
    bool spent = false;
    int ret = 0;

    while (i < end && *done < max_pages && !ret && !*full && !spent) {
        struct batch bt = { .open = -1 };
        int added = 0;

        /* Gather a batch: pages of the type, each with a block or a record. */
        for (; i < end && *done + bt.pages < max_pages && added != 1 && !*full; i++) {
            uint64_t e = __atomic_load_n(&ps->entries[i], __ATOMIC_RELAXED);
            if (!writeback_wanted(e, __atomic_load_n(&ps->fills[i], __ATOMIC_RELAXED), type, now, age))
                continue;
            pthread_mutex_t *lock = stripe(ps, i);
            if (pthread_mutex_trylock(lock))
                continue;               /* in use now: not cold, and never waited for */
            e = ps->entries[i];
            if (writeback_wanted(e, ps->fills[i], type, now, age)) {
                added = add_page(ps, b, &bt, i, e);
                *full = added == -ENOSPC;
            }
            pthread_mutex_unlock(lock);
            if (added == 1 || *full)
                i--;                    /* this page is still to do */
        }
        if (bt.pages) {
            int written = write_batch(b, bt.blocks);
            uint64_t moved = publish_batch(ps, b, &bt, written);
            pthread_mutex_lock(&ps->alloc_lock);
            if (written)
                ps->st.bd_write_errors++;
            if (ps->writeback_limit_enabled)
                ps->writeback_limit -= moved < ps->writeback_limit ? moved : ps->writeback_limit;
            pthread_mutex_unlock(&ps->alloc_lock);
            *done += moved;
            ret = written;
            spent = budget_spent(cpu_until);
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
    ret = writeback_range(ps, type, age_seconds, &cursor, device_pages(ps), max_pages, UINT64_MAX, done, &full);
    pthread_mutex_unlock(&b->lock);
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

/* Whether the store holds (SPILL_SHARE - 1) / SPILL_SHARE of its memory limit or more. */
static bool near_mem_limit(struct page_store *ps)
{
    uint64_t limit = __atomic_load_n(&ps->mem_limit, __ATOMIC_RELAXED);

    return limit && __atomic_load_n(&ps->st.live_chunks, __ATOMIC_RELAXED) * CHUNK_SIZE
                    >= limit / SPILL_SHARE * (SPILL_SHARE - 1);
}

bool writeback_slice(struct page_store *ps, const struct period *p)
{
    struct backing *b = __atomic_load_n(&ps->backing, __ATOMIC_ACQUIRE);
    uint32_t after = __atomic_load_n(&ps->writeback_after, __ATOMIC_RELAXED);
    uint64_t pages = device_pages(ps), done = 0, end;
    bool full = false;

    if (!b || pthread_mutex_trylock(&b->lock))
        return false;                   /* none, or a writeback by hand is running */
    if (b->cursor >= pages)
        b->cursor = 0;
    end = b->cursor + SLICE_SCAN_PAGES < pages ? b->cursor + SLICE_SCAN_PAGES : pages;
    if (near_mem_limit(ps)) {
        /* Near the memory limit: out with the coldest pages first, so that
         * writes find room (then compaction gives the chunks back). Writes
         * may be waiting for it: busy or not, and not cut by the budget. */
        uint32_t age = spill_age(ps, pages, SPILL_PAGES);
        uint64_t cursor = 0;
        writeback_range(ps, age ? PS_WRITEBACK_IDLE : PS_WRITEBACK_ALL, age, &cursor, pages, SPILL_PAGES,
                        UINT64_MAX, &done, &full);
    } else if (after && !p->busy) {
        uint64_t idle_to = b->cursor, raw_to = b->cursor;
        writeback_range(ps, PS_WRITEBACK_IDLE, after, &idle_to, end, SLICE_MAX_PAGES, p->cpu_until, &done,
                        &full);
        writeback_range(ps, PS_WRITEBACK_INCOMPRESSIBLE, 0, &raw_to, end, SLICE_MAX_PAGES, p->cpu_until,
                        &done, &full);
        /* The next slice goes on where the budget stopped this one. */
        b->cursor = budget_spent(p->cpu_until) ? (idle_to < raw_to ? idle_to : raw_to) : end;
    }
    pthread_mutex_unlock(&b->lock);
    return done > 0;
}
