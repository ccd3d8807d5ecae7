/*
 * The backing device: pages written out of RAM to a block device, as
 * zram's backing_dev, so that their memory goes back at once (writeback.c
 * writes them). This file keeps its blocks and reads from it.
 *
 * A page written back keeps its place in the page map. A compressed one
 * goes as its payload, packed with the batch's others end to end (entry.h:
 * a record, its length and the payload, on a 16-byte grid, straddling two
 * neighbouring blocks where it must), so that it takes its payload's room
 * on the device, not 4 KiB, as zram 7.0's compressed writeback does; a
 * frame's record serves every page of it. A block is free once no record
 * is on it (records[], a count a block). A page stored raw, or written to
 * the device because the memory limit left no room, goes whole to a block
 * of its own: a read is then one direct read, as zram's, and neighbours'
 * blocks are read together. Which blocks are in use is known only from the
 * entries, so a new I/O worker rebuilds the free map from them
 * (ps_set_backing) and a worker killed during a writeback leaks no block:
 * a block is in use once a page's entry names it, and until then it was
 * only written, never published. Blocks are taken and freed under
 * alloc_lock, as slots are.
 *
 * Reads of written-back pages happen on the I/O path: the device is another
 * device than this one, so its reads never wait on this store's reclaim.
 * So do writes the memory limit leaves no room for (write_backed): the
 * page goes straight to the device, as zswap sends what its full pool
 * refuses to the swap device, rather than wait for the background to
 * spill room (its periods take seconds under load). A
 * request's neighbouring pages on neighbouring blocks (as a writeback
 * leaves them) are read with one read, as are pages of the zram tier at
 * neighbouring offsets.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"

#define BITS 64u
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
uint64_t take_block(struct page_store *ps)
{
    struct backing *b = ps->backing;
    uint64_t words = (b->blocks + BITS - 1) / BITS;

    if (b->n_used >= b->blocks)
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
        b->n_used++;
        return block;
    }
    return UINT64_MAX;
}

void free_block(struct page_store *ps, uint64_t block)
{
    struct backing *b = ps->backing;

    if (b && block < b->blocks && block_used(b, block)) {
        mark_block(b, block, false);
        b->n_used--;
    }
}

/* Whether `block` holds a page whole (not records). */
static bool holds_page(const struct backing *b, uint64_t block)
{
    return block_used(b, block) && !b->records[block];
}

static void count_on(struct backing *b, uint64_t e, int sign)
{
    uint64_t at = packed_at(e);

    for (uint64_t block = at / PAGE_SIZE; block <= (at + packed_span(e) - 1) / PAGE_SIZE; block++) {
        if (sign > 0) {
            if (!block_used(b, block))
                mark_block(b, block, true), b->n_used++;
            b->records[block]++;
        } else if (--b->records[block] == 0) {
            mark_block(b, block, false);
            b->n_used--;
        }
    }
}

void count_record(struct page_store *ps, uint64_t e, int sign)
{
    count_on(ps->backing, e, sign);
}

void release_backed(struct page_store *ps, uint64_t index, uint64_t e)
{
    if (!ps->backing)
        return;
    if (!entry_packed(e)) {
        free_block(ps, entry_block(e));
        return;
    }
    if (entry_codec(e) == ENTRY_FRAME) {
        if (frame_held(ps, index, e))
            return;                     /* another page of the frame still reads it */
        /* Its place may take another frame's record: a decoded copy of it
         * (w->frame) is stale. */
        __atomic_store_n(&ps->frames_freed, ps->frames_freed + 1, __ATOMIC_RELAXED);
    }
    count_record(ps, e, -1);
}

const uint8_t *read_record(struct ps_scratch *w, uint64_t e)
{
    struct page_store *ps = w->ps;
    struct backing *b = ps->backing;
    uint64_t at = packed_at(e), first = at / PAGE_SIZE, n = (at + packed_span(e) - 1) / PAGE_SIZE - first + 1;
    uint64_t writes, want = n;

    if (!b || first + n > b->blocks) {
        __atomic_fetch_add(&ps->st.bd_read_errors, 1, __ATOMIC_RELAXED);
        return NULL;
    }
    /* The blocks read before, unless the device was written since (a block
     * free then, or read ahead, may hold records now): the next page's
     * record is often on them. */
    writes = __atomic_load_n(&b->writes, __ATOMIC_ACQUIRE);
    bool in_order = w->record_blocks && first >= w->record_block &&
                    first <= w->record_block + w->record_blocks;
    if (in_order && first + n <= w->record_block + w->record_blocks && writes == w->record_writes)
        return (const uint8_t *)w->record + (at - w->record_block * PAGE_SIZE);
    /* Reads in order read ahead: a writeback packs pages in order. */
    if (in_order)
        want = b->blocks - first < RECORD_BLOCKS ? b->blocks - first : RECORD_BLOCKS;
    w->record_blocks = 0;
    if (pread(b->fd, w->record, want * PAGE_SIZE, (off_t)(first * PAGE_SIZE)) != (ssize_t)(want * PAGE_SIZE)) {
        __atomic_fetch_add(&ps->st.bd_read_errors, 1, __ATOMIC_RELAXED);
        return NULL;
    }
    w->record_block = first;
    w->record_blocks = want;
    w->record_writes = writes;
    __atomic_fetch_add(&ps->st.bd_reads, 1, __ATOMIC_RELAXED);
    return (const uint8_t *)w->record + at % PAGE_SIZE;
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

int write_backed(struct ps_scratch *w, uint64_t index, const void *page)
{
    struct page_store *ps = w->ps;
    struct backing *b = ps->backing;
    uint64_t block;

    if (!b)
        return -ENOSPC;
    pthread_mutex_lock(&ps->alloc_lock);
    block = take_block(ps);
    pthread_mutex_unlock(&ps->alloc_lock);
    if (block == UINT64_MAX)
        return -ENOSPC;
    /* O_DIRECT wants an aligned buffer: the scratch page is one. */
    if (page != w->page)
        copy_bytes(w->page, page, PAGE_SIZE);
    bool written = pwrite(b->fd, w->page, PAGE_SIZE, (off_t)(block * PAGE_SIZE)) == PAGE_SIZE;
    __atomic_fetch_add(&b->writes, 1, __ATOMIC_RELEASE);
    pthread_mutex_lock(&ps->alloc_lock);
    if (written) {
        publish(ps, index, entry_backed_at(block));
        ps->st.bd_writes++;
    } else {
        free_block(ps, block);
        ps->st.bd_write_errors++;
    }
    pthread_mutex_unlock(&ps->alloc_lock);
    return written ? 0 : -EIO;
}

int read_run_outside_ram(struct ps_scratch *w, uint64_t index, uint32_t max_pages, void *dest)
{
    struct page_store *ps = w->ps;
    uint64_t e = ps->entries[index];
    bool zram = entry_in_zram(e);
    uint64_t first = zram ? index : entry_block(e), *errors, *reads;
    pthread_mutex_t *held[RUN_GROUPS];
    uint32_t n = 1, locked = 0;
    int fd, ret = 0;

    if ((uintptr_t)dest % PAGE_SIZE || !entry_backed(e) || entry_packed(e))
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
        if (zram ? !entry_in_zram(next) : !entry_backed(next) || entry_in_zram(next) || entry_packed(next) ||
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
    if (!blocks || blocks > PACKED_AT_MASK / (PAGE_SIZE / 16))
        return -EINVAL;
    /* A writeback fills the batch and takes blocks under locks a request
     * may wait for: all of it resident now. */
    if (!(b = resident_calloc(1, sizeof(*b))))
        return -ENOMEM;
    b->fd = fd;
    b->blocks = blocks;
    b->used = resident_calloc((blocks + BITS - 1) / BITS, sizeof(uint64_t));
    b->records = resident_calloc(blocks, sizeof(*b->records));
    if ((b->batch = aligned_alloc(PAGE_SIZE, PS_WRITEBACK_BATCH * PAGE_SIZE)))
        populate(b->batch, PS_WRITEBACK_BATCH * PAGE_SIZE);
    b->scratch = scratch_new(ps, ps->codec, ps->level);
    if (!b->used || !b->records || !b->batch || !b->scratch) {
        ret = -ENOMEM;
        goto fail;
    }
    pthread_mutex_init(&b->lock, NULL);
    pthread_mutex_lock(&ps->alloc_lock);
    for (uint64_t i = 0; i < ps->max_pages && !ret; i++) {
        uint64_t e = ps->entries[i], at = packed_at(e);
        if (!entry_backed(e) || entry_in_zram(e))
            continue;
        /* Another device than the one written to, two pages on one block,
         * or a record on a page's block. */
        if (!entry_packed(e)) {
            if (entry_block(e) >= blocks || block_used(b, entry_block(e)))
                ret = -EUCLEAN;
            else
                mark_block(b, entry_block(e), true), b->n_used++;
            continue;
        }
        uint64_t last = (at + packed_span(e) - 1) / PAGE_SIZE;
        if (last >= blocks || holds_page(b, at / PAGE_SIZE) || holds_page(b, last)) {
            ret = -EUCLEAN;
            continue;
        }
        /* A frame's record once, at the first page of its group met. */
        if (entry_codec(e) != ENTRY_FRAME || !frame_seen(ps, i, e))
            count_on(b, e, 1);
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
        scratch_free(b->scratch);
    free(b->batch);
    free(b->used);
    free(b->records);
    free(b);
    return ret;
}

void backing_free(struct page_store *ps)
{
    struct backing *b = ps->backing;

    if (!b)
        return;
    pthread_mutex_destroy(&b->lock);
    scratch_free(b->scratch);
    free(b->batch);
    free(b->used);
    free(b->records);
    free(b);
    ps->backing = NULL;
}
