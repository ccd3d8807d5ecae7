/*
 * The page store's compaction -- payloads moved out of sparse chunks so
 * that more chunks empty and go back -- and the rebuild of its allocator
 * from the page map when a new I/O worker attaches to an arena.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>

#include "page_store_impl.h"

static int by_used(const void *a, const void *b, void *arg)
{
    const struct chunk_meta *meta = arg;
    return (int)meta[*(const uint32_t *)a].used - (int)meta[*(const uint32_t *)b].used;
}

/* Move page `index`'s payload (entry `e`) into a chunk of `targets`. */
static bool move_page(struct page_store *ps, uint64_t index, uint64_t e,
                      uint32_t *targets, size_t n_targets, size_t *next_target)
{
    uint32_t from = (uint32_t)entry_chunk(e), slot, len = entry_len(e);
    bool moved = false;

    pthread_mutex_lock(stripe(ps, index));
    pthread_mutex_lock(&ps->alloc_lock);
    while (*next_target < n_targets) {
        struct chunk_meta *t = &ps->meta[targets[*next_target]];
        if (t->cls == ps->meta[from].cls && t->used < slots_per_chunk(t->cls))
            break;
        (*next_target)++;
    }
    if (ps->entries[index] == e && *next_target < n_targets) {
        uint32_t to = targets[*next_target];
        slot = take_slot(ps, to);
        copy_bytes(slot_addr(ps, to, slot), slot_addr(ps, from, entry_slot(e)), len);
        __atomic_store_n(&ps->entries[index], entry_stored(to, slot, len), __ATOMIC_RELEASE);
        free_slot(ps, from, entry_slot(e));
        moved = true;
    }
    pthread_mutex_unlock(&ps->alloc_lock);
    pthread_mutex_unlock(stripe(ps, index));
    return moved;
}

uint64_t ps_compact(struct page_store *ps)
{
    uint8_t *is_source = calloc(ps->max_chunks, 1);
    uint32_t *list = malloc(ps->max_chunks * sizeof(*list));
    uint32_t *targets[CLASS_COUNT] = { 0 };
    size_t n_targets[CLASS_COUNT] = { 0 }, next_target[CLASS_COUNT] = { 0 };
    uint64_t live_before, freed = 0;
    bool any = false;

    if (!is_source || !list)
        goto out;
    /* Per class: the sparsest chunks whose payloads fit in the free room of
     * the others become sources; the others, fullest first, targets. */
    pthread_mutex_lock(&ps->alloc_lock);
    live_before = ps->st.live_chunks;
    for (int cls = 0; cls < (int)CLASS_COUNT; cls++) {
        size_t n = 0, lo, hi;
        uint64_t room = 0, moving = 0;

        for (uint32_t c = ps->partial[cls]; c != NO_CHUNK; c = ps->meta[c].next)
            list[n++] = c;
        if (n < 2)
            continue;
        qsort_r(list, n, sizeof(*list), by_used, ps->meta);
        for (lo = 0, hi = n; lo < hi; lo++) {
            while (hi > lo + 1 && room < moving + ps->meta[list[lo]].used)
                room += slots_per_chunk(cls) - ps->meta[list[--hi]].used;
            if (room < moving + ps->meta[list[lo]].used)
                break;
            moving += ps->meta[list[lo]].used;
            is_source[list[lo]] = 1;
        }
        if (lo == 0 || !(targets[cls] = malloc((n - hi) * sizeof(uint32_t))))
            continue;
        for (size_t i = n; i > hi; i--)
            targets[cls][n_targets[cls]++] = list[i - 1];
        any = true;
    }
    pthread_mutex_unlock(&ps->alloc_lock);

    for (uint64_t i = 0; any && i < ps->pages; i++) {
        uint64_t e = __atomic_load_n(&ps->entries[i], __ATOMIC_ACQUIRE);
        if (!(e & ENTRY_STORED) || !is_source[entry_chunk(e)])
            continue;
        int cls = ps->meta[entry_chunk(e)].cls;
        if (cls >= 0 && targets[cls])
            move_page(ps, i, e, targets[cls], n_targets[cls], &next_target[cls]);
    }
    pthread_mutex_lock(&ps->alloc_lock);
    if (ps->st.live_chunks < live_before)
        freed = live_before - ps->st.live_chunks;
    ps->st.pages_compacted += freed * (CHUNK_SIZE / PAGE_SIZE);
    pthread_mutex_unlock(&ps->alloc_lock);
out:
    for (int cls = 0; cls < (int)CLASS_COUNT; cls++)
        free(targets[cls]);
    free(list);
    free(is_source);
    return freed * (CHUNK_SIZE / PAGE_SIZE);
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
        if (e & ENTRY_SAME) {
            ps->st.same_pages++;
            continue;
        }
        uint64_t c = entry_chunk(e);
        uint32_t slot = entry_slot(e), len = entry_len(e);
        int cls = size_class(len);
        if (!(e & ENTRY_STORED) || c >= ps->max_chunks || slot >= slots_per_chunk(cls))
            goto out;
        if (!used_slots[c]) {
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
        ps->st.huge_pages += len == PAGE_SIZE;
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
        if (m->used < slots)
            list_add(ps, (uint32_t)c);
    }
    ps->st.peak_live_chunks = ps->st.live_chunks;
    ret = 0;
out:
    if (used_slots)
        for (uint64_t c = 0; c < ps->max_chunks; c++)
            free(used_slots[c]);
    free(used_slots);
    return ret;
}
