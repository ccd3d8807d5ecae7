/*
 * The counters of what the store holds (struct ps_stats): pages by kind,
 * payload bytes, frames. They change here only, as entries are published
 * (publish.c), frames made and freed (recompress.c, publish.c) and the
 * page map found on attach (rebuild()), always under alloc_lock. Counts of
 * events (reads, writes, moves, errors) are kept where the events happen.
 */
#define _GNU_SOURCE
#include "internal.h"

void account(struct page_store *ps, uint64_t e, enum held what, int sign)
{
    struct ps_stats *st = &ps->st;
    uint64_t n = (uint64_t)(int64_t)sign;  /* -1 wraps round: the counters are unsigned */
    uint64_t len = entry_len(e);

    if (what == HELD_FRAME) {
        st->frames += n;
        st->frame_bytes += n * len;
        st->recompressed_bytes += n * len;
        st->compr_data_size += n * len;
        return;
    }
    st->pages_stored += n;
    if (entry_in_zram(e)) {
        st->zram_pages += n;
    } else if (entry_backed(e)) {
        st->bd_count += n;
    } else if (e & ENTRY_SAME) {
        st->same_pages += n;
    } else if (entry_codec(e) == ENTRY_FRAME) {
        st->recompressed_pages += n;
        st->frame_pages += n;
    } else {
        st->compr_data_size += n * len;
        st->huge_pages += n * (len == PAGE_SIZE);
        if (e & ENTRY_CODEC) {
            st->recompressed_pages += n;
            st->recompressed_bytes += n * len;
        }
    }
}
