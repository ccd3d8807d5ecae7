/*
 * The allocator: zsmalloc-like slots in chunks. A chunk serves one 16-byte
 * size class (size_class()), its slots packed end to end; each class keeps
 * a list of its chunks with room. A chunk costs memory while in use and
 * goes back to the reserve (reserve.c) once empty. All under alloc_lock.
 *
 * Nothing of it is kept across workers: the entries alone describe the
 * arena, and a new I/O worker rebuilds the allocator from them (rebuild()).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>

#include "internal.h"

void list_add(struct page_store *ps, uint32_t c)
{
    struct chunk_meta *m = &ps->meta[c];
    uint32_t head = ps->partial[m->cls];

    m->prev = NO_CHUNK;
    m->next = head;
    if (head != NO_CHUNK)
        ps->meta[head].prev = c;
    ps->partial[m->cls] = c;
}

static void list_del(struct page_store *ps, uint32_t c)
{
    struct chunk_meta *m = &ps->meta[c];

    if (m->prev != NO_CHUNK)
        ps->meta[m->prev].next = m->next;
    else
        ps->partial[m->cls] = m->next;
    if (m->next != NO_CHUNK)
        ps->meta[m->next].prev = m->prev;
    m->prev = m->next = NO_CHUNK;
}

bool at_mem_limit(const struct page_store *ps)
{
    return ps->mem_limit && (ps->st.live_chunks + 1) * CHUNK_SIZE > ps->mem_limit;
}

static void count_live(struct page_store *ps)
{
    if (++ps->st.live_chunks > ps->st.peak_live_chunks)
        ps->st.peak_live_chunks = ps->st.live_chunks;
}

int new_chunk(struct page_store *ps, int cls, uint32_t *out)
{
    uint32_t c;

    if (at_mem_limit(ps))
        return -ENOSPC;
    if (reserve_take(ps, &c) < 0)
        return -ENOMEM;
    ps->meta[c] = (struct chunk_meta){ .cls = (int16_t)cls, .prev = NO_CHUNK, .next = NO_CHUNK };
    ps->class_free[cls] += slots_per_chunk(cls);
    list_add(ps, c);
    count_live(ps);
    *out = c;
    return 0;
}

/* Chunk `c` counted live with every slot taken, on no class's list. */
static void hold_whole(struct page_store *ps, uint32_t c)
{
    int cls = (int)CLASS_COUNT - 1;

    ps->meta[c] = (struct chunk_meta){ .cls = (int16_t)cls, .used = (uint16_t)slots_per_chunk(cls),
                                       .bump = (uint16_t)slots_per_chunk(cls), .prev = NO_CHUNK,
                                       .next = NO_CHUNK };
    count_live(ps);
}

int new_whole_chunk(struct page_store *ps, uint32_t *out)
{
    if (at_mem_limit(ps))
        return -ENOSPC;
    if (ps->n_ready <= reserve_kept_from_moves(ps) || reserve_take(ps, out) < 0)
        return -EAGAIN;
    hold_whole(ps, *out);
    return 0;
}

void free_whole_chunk(struct page_store *ps, uint32_t c)
{
    ps->meta[c].cls = -1;
    ps->st.live_chunks--;
    reserve_give_back(ps, c);
}

uint32_t take_slot(struct page_store *ps, uint32_t c)
{
    struct chunk_meta *m = &ps->meta[c];
    uint32_t slot;

    if (m->free_head) {
        slot = m->free_head - 1u;
        memcpy(&m->free_head, slot_addr(ps, c, slot), sizeof(m->free_head));
    } else {
        slot = m->bump++;
    }
    ps->class_free[m->cls]--;
    if (++m->used == slots_per_chunk(m->cls))
        list_del(ps, c);
    return slot;
}

void free_slot(struct page_store *ps, uint32_t c, uint32_t slot)
{
    struct chunk_meta *m = &ps->meta[c];

    ps->class_free[m->cls]++;
    if (m->used-- == slots_per_chunk(m->cls))
        list_add(ps, c);
    if (m->used == 0) {
        list_del(ps, c);
        ps->class_free[m->cls] -= slots_per_chunk(m->cls);
        m->cls = -1;
        ps->st.live_chunks--;
        reserve_give_back(ps, c);
        return;
    }
    memcpy(slot_addr(ps, c, slot), &m->free_head, sizeof(m->free_head));
    m->free_head = (uint16_t)(slot + 1);
}

/* -- the rebuild on attach -------------------------------------------------- */

/* Slots past the last used one of chunk `c` stay unhanded (and untouched);
 * the free ones below it are linked; the chunk is counted live. */
static void rebuild_chunk(struct page_store *ps, uint64_t c, const uint8_t *used_slots)
{
    struct chunk_meta *m = &ps->meta[c];
    uint32_t slots = slots_per_chunk(m->cls), bump = slots;

    while (!used_slots[bump - 1])
        bump--;
    m->bump = (uint16_t)bump;
    for (uint32_t s = bump; s-- > 0;) {
        if (used_slots[s])
            continue;
        memcpy(slot_addr(ps, c, s), &m->free_head, sizeof(m->free_head));
        m->free_head = (uint16_t)(s + 1);
    }
    ps->st.live_chunks++;
    ps->class_free[m->cls] += slots - m->used;
    if (m->used < slots)
        list_add(ps, (uint32_t)c);
}

int rebuild(struct page_store *ps)
{
    uint8_t **used_slots = calloc(ps->max_chunks, sizeof(*used_slots));
    int ret = -ENOMEM;

    if (!used_slots)
        goto out;
    if (ps->dict_chunk != NO_CHUNK) {   /* checked by dict_attach() */
        raise_chunk_limit(ps, ps->dict_chunk + 1ull);
        hold_whole(ps, ps->dict_chunk);
        ps->chunk_high = ps->dict_chunk + 1ull;
    }
    ret = -EUCLEAN;
    for (uint64_t i = 0; i < ps->pages; i++) {
        uint64_t e = ps->entries[i];
        if (!e)
            continue;
        if ((e & ENTRY_SAME) || entry_backed(e)) {
            account(ps, e, HELD_PAGE, 1);   /* a block outside RAM is checked when its device
                                               is set (ps_set_backing, ps_set_zram) */
            continue;
        }
        if (!(e & ENTRY_STORED))
            goto out;
        uint64_t c = entry_chunk(e);
        uint32_t slot = entry_slot(e), len = entry_len(e);
        int cls = size_class(len);
        bool frame = entry_codec(e) == ENTRY_FRAME;
        if (c >= ps->max_chunks || slot >= slots_per_chunk(cls) ||
            (frame && (len <= FRAME_HEADER || (e & ENTRY_PADDED))))
            goto out;
        account(ps, e, HELD_PAGE, 1);
        if (frame && frame_seen(ps, i, e))
            continue;                   /* its slot is counted with the frame's first page */
        if (c == ps->dict_chunk)
            goto out;                   /* a payload in the dictionary */
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
            goto out;                   /* two classes in a chunk, or a slot twice */
        used_slots[c][slot] = 1;
        ps->meta[c].used++;
        if (frame)
            account(ps, e, HELD_FRAME, 1);
        if (c + 1 > ps->chunk_high)
            ps->chunk_high = c + 1;
    }
    /* The old worker's reserve lay past its last chunk in use. */
    punch_hole(ps, chunk_offset(ps, ps->chunk_high), (ps->max_chunks - ps->chunk_high) * CHUNK_SIZE);
    for (uint64_t c = ps->chunk_high; c-- > 0;) {
        if (c == ps->dict_chunk)
            continue;
        if (used_slots[c])
            rebuild_chunk(ps, c, used_slots[c]);
        else
            chunk_unused(ps, (uint32_t)c);
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
