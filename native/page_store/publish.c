/*
 * Publishing: a page's entry changed with one 64-bit store, then what the
 * old entry held freed -- its slot, its frame's slot once no page of the
 * group points at it, its block or record on the backing device. Until
 * the store, the old entry still describes the page whole, so a worker
 * killed at any instant leaves a map that describes every page (see
 * arena.c).
 */
#define _GNU_SOURCE
#include "internal.h"

void publish(struct page_store *ps, uint64_t index, uint64_t entry)
{
    uint64_t old = ps->entries[index];

    __atomic_store_n(&ps->entries[index], entry, __ATOMIC_RELEASE);
    if (entry)
        account(ps, entry, HELD_PAGE, 1);
    if (!old)
        return;
    account(ps, old, HELD_PAGE, -1);
    if (entry_in_zram(old))
        return;                         /* its caller discards its block (leave_zram) */
    if (entry_backed(old))
        release_backed(ps, index, old);
    else if (old & ENTRY_SAME)
        return;                         /* it held no room */
    else if (entry_codec(old) == ENTRY_FRAME)
        frame_release(ps, index, old);
    else
        free_slot(ps, (uint32_t)entry_chunk(old), entry_slot(old));
}

void frame_release(struct page_store *ps, uint64_t index, uint64_t e)
{
    if (frame_held(ps, index, e))
        return;
    account(ps, e, HELD_FRAME, -1);
    __atomic_store_n(&ps->frames_freed, ps->frames_freed + 1, __ATOMIC_RELAXED);
    free_slot(ps, (uint32_t)entry_chunk(e), entry_slot(e));
}
