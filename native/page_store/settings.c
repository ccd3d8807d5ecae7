/*
 * The store's settings and figures: the memory limit, the entropy
 * threshold, the statistics, and the device's size (ps_resize).
 */
#define _GNU_SOURCE
#include <errno.h>

#include "internal.h"

void ps_set_mem_limit(struct page_store *ps, uint64_t bytes)
{
    pthread_mutex_lock(&ps->alloc_lock);
    ps->mem_limit = bytes;
    ((struct arena_header *)ps->base)->mem_limit = bytes;
    pthread_mutex_unlock(&ps->alloc_lock);
}

void ps_get_stats(struct page_store *ps, struct ps_stats *out)
{
    pthread_mutex_lock(&ps->alloc_lock);
    *out = ps->st;
    out->mem_limit = ps->mem_limit;
    out->dict_bytes = ps->dict_len;
    out->bd_used_blocks = ps->backing ? ps->backing->n_used : 0;
    out->reserve_chunks = ps->n_ready + ps->n_refilling;
    out->pool_bytes = (ps->st.live_chunks + out->reserve_chunks) * CHUNK_SIZE;
    out->map_bytes = PAGE_SIZE + 2 * map_bytes(ps->pages)
                     + ps->chunk_limit * (sizeof(struct chunk_meta) + sizeof(*ps->free_chunks))
                     + RESERVE_CHUNKS * sizeof(uint32_t) + sizeof(*ps) + compaction_bytes(ps) + background_bytes();
    pthread_mutex_unlock(&ps->alloc_lock);
}

uint64_t ps_pages(struct page_store *ps)
{
    return device_pages(ps);
}

uint64_t ps_max_pages(struct page_store *ps)
{
    return ps->max_pages;
}

uint64_t ps_pages_stored_from(struct page_store *ps, uint64_t first)
{
    uint64_t n = 0, pages = device_pages(ps);

    for (uint64_t i = first; i < pages; i++)
        n += __atomic_load_n(&ps->entries[i], __ATOMIC_RELAXED) != 0;
    return n;
}

int ps_resize(struct page_store *ps, uint64_t pages)
{
    uint64_t old = ps->pages, keep;

    if (pages == 0 || pages > ps->max_pages)
        return -EFBIG;
    if (pages > old) {
        /* The maps' new part and the bookkeeping of the chunks the new
         * pages may need, faulted in before a request can reach them. */
        populate(ps->entries + old, (pages - old) * sizeof(*ps->entries));
        populate(ps->fills + old, (pages - old) * sizeof(*ps->fills));
        raise_chunk_limit(ps, max_chunks_for(pages));
    } else if (ps_pages_stored_from(ps, pages)) {
        return -EBUSY;
    }
    pthread_mutex_lock(&ps->alloc_lock);
    __atomic_store_n(&ps->pages, pages, __ATOMIC_RELAXED);
    ((struct arena_header *)ps->base)->pages = pages;
    pthread_mutex_unlock(&ps->alloc_lock);
    if (pages < old) {
        /* The maps' pages wholly past the new end hold only zeros: give
         * them back. (Chunks stay usable: stored pages may lie anywhere.) */
        keep = map_bytes(pages);
        punch_hole(ps, PAGE_SIZE + keep, map_bytes(old) - keep);
        punch_hole(ps, PAGE_SIZE + map_bytes(ps->max_pages) + keep, map_bytes(old) - keep);
    }
    return 0;
}

void ps_reset_peak(struct page_store *ps)
{
    pthread_mutex_lock(&ps->alloc_lock);
    ps->st.peak_live_chunks = ps->st.live_chunks;
    pthread_mutex_unlock(&ps->alloc_lock);
}

void ps_set_entropy_threshold(struct page_store *ps, double bits)
{
    ps->entropy_threshold = (uint32_t)(bits * ENTROPY_ONE);
}
