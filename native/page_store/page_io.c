/*
 * The store's operations on the I/O path: reads, writes and discards of
 * byte ranges, page by page under each page's stripe lock. A write routes
 * its page: same-filled into the map, low entropy to the zram tier when it
 * is set, else compressed (or raw, for already compressed data) into a
 * slot. A read of pages outside RAM on neighbouring blocks is one read.
 * At the memory limit a page goes straight to the backing device, if there
 * is one with room (backing.c); no write waits for room.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>

#include "internal.h"

static const char zero_page[PAGE_SIZE];

static int load_page(struct ps_scratch *w, uint64_t index, void *dest)
{
    struct page_store *ps = w->ps;
    uint64_t e;

    if (!(e = ps->entries[index])) {
        fill_words(dest, 0, PAGE_SIZE / 8);
        return 0;
    }
    if (e & ENTRY_SAME) {
        fill_words(dest, ps->fills[index], PAGE_SIZE / 8);
        return 0;
    }
    if (entry_in_zram(e))
        return read_zram(w, index, dest);
    if (entry_packed(e))
        return load_packed(w, index, e, dest);
    if (entry_backed(e))
        return read_backed(w, e, dest);
    note_access(ps, index);
    if (entry_codec(e) == ENTRY_FRAME)
        return load_frame(w, index, e, dest);
    return decode_payload(w, e, slot_addr(ps, entry_chunk(e), entry_slot(e)), dest);
}

static int store_page(struct ps_scratch *w, uint64_t index, const void *page)
{
    struct page_store *ps = w->ps;
    const void *payload = w->out;
    uint32_t entropy, bits;
    bool raw;
    uint64_t entry;
    uint32_t len = 0;
    int ret;

    bool was_in_zram = entry_in_zram(ps->entries[index]);

    if (page_is_filled(page)) {
        pthread_mutex_lock(&ps->alloc_lock);
        memcpy(&ps->fills[index], page, 8);
        publish(ps, index, ENTRY_SAME);
        pthread_mutex_unlock(&ps->alloc_lock);
        if (was_in_zram)
            leave_zram(ps, index);
        return 0;
    }
    entropy = page_entropy(page);
    bits = entropy / ENTROPY_ONE;
    /* Routed to kernel zram: written there, over its old copy if any. */
    if (zram_wanted(ps, index, entropy) && write_zram(w, index, page) == 0) {
        pthread_mutex_lock(&ps->alloc_lock);
        publish(ps, index, entry_zram(index));
        ps->st.entropy_pages[bits < PS_ENTROPY_BUCKETS ? bits : PS_ENTROPY_BUCKETS - 1]++;
        pthread_mutex_unlock(&ps->alloc_lock);
        return 0;
    }
    /* Already compressed or encrypted data: raw at once, no codec tried,
     * and never worth recompressing. */
    raw = ps->entropy_threshold && entropy >= ps->entropy_threshold;
    if (!raw)
        len = compress_page(w, page, ps->huge_threshold);
    if (len == 0) {
        payload = page;
        len = PAGE_SIZE;
    }
    pthread_mutex_lock(&ps->alloc_lock);
    if ((ret = put_payload(ps, page, payload, len, false, &entry)) == 0) {
        note_access(ps, index);         /* a rewritten page starts hot */
        publish(ps, index, raw ? entry | ENTRY_SETTLED : entry);
        ps->st.entropy_raw += raw;
        ps->st.entropy_pages[bits < PS_ENTROPY_BUCKETS ? bits : PS_ENTROPY_BUCKETS - 1]++;
    }
    pthread_mutex_unlock(&ps->alloc_lock);
    if (ret == -ENOSPC)
        ret = write_backed(w, index, page);
    if (ret == 0 && was_in_zram)
        leave_zram(ps, index);
    return ret;
}

/* Replace part of one page: `len` bytes of `data` (NULL: zeros) at `start`. */
static int patch_page(struct ps_scratch *w, uint64_t index, uint32_t start, uint32_t len,
                      const void *data)
{
    pthread_mutex_t *lock = stripe(w->ps, index);
    int ret;

    pthread_mutex_lock(lock);
    ret = load_page(w, index, w->page);
    if (ret == 0) {
        copy_bytes(w->page + start, data ? data : zero_page, len);
        ret = store_page(w, index, w->page);
    }
    pthread_mutex_unlock(lock);
    return ret;
}

/* -- the store's operations ------------------------------------------------ */

int ps_read(struct ps_scratch *w, uint64_t offset, uint32_t len, void *dest)
{
    char *out = dest;

    while (len) {
        uint64_t index = offset / PAGE_SIZE;
        uint32_t start = offset % PAGE_SIZE;
        uint32_t n = PAGE_SIZE - start < len ? PAGE_SIZE - start : len;
        pthread_mutex_t *lock = stripe(w->ps, index);
        int ret = 0, run = 0;

        pthread_mutex_lock(lock);
        if (n == PAGE_SIZE)
            run = read_run_outside_ram(w, index, len / PAGE_SIZE, out);
        if (run > 0) {
            n = (uint32_t)run * PAGE_SIZE;
        } else if (run < 0) {
            ret = run;
        } else if (n == PAGE_SIZE) {
            ret = load_page(w, index, out);
        } else {
            ret = load_page(w, index, w->page);
            copy_bytes(out, w->page + start, n);
        }
        pthread_mutex_unlock(lock);
        if (ret)
            return ret;
        w->pages_served += n / PAGE_SIZE ? n / PAGE_SIZE : 1;
        out += n;
        offset += n;
        len -= n;
    }
    return 0;
}

void ps_serving_swap(struct ps_scratch *w)
{
    /* Once: the flag is read without a lock, and only ever goes up. */
    if (!__atomic_load_n(&w->ps->st.serving_swap, __ATOMIC_RELAXED))
        __atomic_store_n(&w->ps->st.serving_swap, 1, __ATOMIC_RELAXED);
}

int ps_write(struct ps_scratch *w, uint64_t offset, uint32_t len, const void *src)
{
    const char *in = src;

    while (len) {
        uint64_t index = offset / PAGE_SIZE;
        uint32_t start = offset % PAGE_SIZE;
        uint32_t n = PAGE_SIZE - start < len ? PAGE_SIZE - start : len;
        int ret;

        w->pages_served++;
        if (n == PAGE_SIZE) {
            pthread_mutex_lock(stripe(w->ps, index));
            ret = store_page(w, index, in);
            pthread_mutex_unlock(stripe(w->ps, index));
        } else {
            ret = patch_page(w, index, start, n, in);
        }
        if (ret)
            return ret;
        in += n;
        offset += n;
        len -= n;
    }
    return 0;
}

static void drop_page(struct page_store *ps, uint64_t index)
{
    pthread_mutex_t *lock = stripe(ps, index);

    if (!ps->entries[index])
        return;
    pthread_mutex_lock(lock);
    bool was_in_zram = entry_in_zram(ps->entries[index]);
    pthread_mutex_lock(&ps->alloc_lock);
    if (ps->entries[index]) {
        publish(ps, index, 0);
        ps->st.notify_free++;
    }
    pthread_mutex_unlock(&ps->alloc_lock);
    if (was_in_zram)
        leave_zram(ps, index);
    pthread_mutex_unlock(lock);
}

int ps_discard(struct ps_scratch *w, uint64_t offset, uint64_t len)
{
    struct page_store *ps = w->ps;
    uint64_t first = offset / PAGE_SIZE, last = (offset + len) / PAGE_SIZE;   /* last: exclusive */
    uint32_t head = offset % PAGE_SIZE, tail = (offset + len) % PAGE_SIZE;
    int ret;

    if (len == 0)
        return 0;
    if (first == last)                  /* inside one page */
        return patch_page(w, first, head, (uint32_t)len, NULL);
    if (head) {
        if ((ret = patch_page(w, first, head, PAGE_SIZE - head, NULL)))
            return ret;
        first++;
    }
    if (tail && (ret = patch_page(w, last, 0, tail, NULL)))
        return ret;
    for (uint64_t index = first; index < last; index++)
        drop_page(ps, index);
    return 0;
}

/* -- each serving thread's scratch ------------------------------------------ */

struct ps_scratch *ps_scratch_new(struct page_store *ps)
{
    struct ps_scratch *w = scratch_new(ps, ps->codec, ps->level);

    if (w) {
        pthread_mutex_lock(&ps->alloc_lock);
        w->next = ps->scratches;
        ps->scratches = w;
        pthread_mutex_unlock(&ps->alloc_lock);
    }
    return w;
}

void ps_scratch_free(struct ps_scratch *w)
{
    struct page_store *ps = w->ps;

    if (ps) {                           /* else a codec's own (ps_codec_new) */
        pthread_mutex_lock(&ps->alloc_lock);
        for (struct ps_scratch **p = &ps->scratches; *p; p = &(*p)->next)
            if (*p == w) {
                *p = w->next;
                break;
            }
        pthread_mutex_unlock(&ps->alloc_lock);
    }
    scratch_free(w);
}
