/*
 * Payloads: a page's compressed bytes put in a free slot (the slot's class
 * chosen, a larger class's free slot taken when a new chunk would wait or
 * break the memory limit), and a stored entry's payload decoded -- alone,
 * or out of its frame (entry.h), in a slot or packed on the backing device.
 */
#define _GNU_SOURCE
#include <errno.h>

#include "internal.h"

int decode_payload(struct ps_scratch *w, uint64_t e, const char *payload, void *dest)
{
    uint32_t len = entry_len(e);
    unsigned codec = entry_codec(e);

    if (e & ENTRY_PADDED) {
        uint16_t n;
        memcpy(&n, payload, sizeof(n));
        if (n == 0 || n + sizeof(n) > len)
            return -EIO;
        payload += sizeof(n);
        len = n;
    } else if (len == PAGE_SIZE) {
        copy_bytes(dest, payload, PAGE_SIZE);
        return 0;
    }
    return decompress_page(w, codec ? codec : entry_codec_of(w->ps->codec), payload, len, dest);
}

/* Page `index` out of the frame `payload` (`len` bytes) of entry `e`:
 * decoded whole into w->frame, where the next page of the run is found
 * without decoding it again. */
static int decode_frame(struct ps_scratch *w, uint64_t index, uint64_t e, const uint8_t *payload, uint32_t len,
                        void *dest)
{
    struct page_store *ps = w->ps;
    uint32_t first = payload[0] & ~FRAME_DICT, count = payload[1];
    uint32_t at = (uint32_t)(index % FRAME_PAGES) - first;
    uint64_t freed = __atomic_load_n(&ps->frames_freed, __ATOMIC_RELAXED);
    /* The dictionary, for a frame made with it (NULL: decoded without). */
    const ZSTD_DDict *dict = payload[0] & FRAME_DICT ? ps->ddict : NULL;

    if (count > FRAME_PAGES || at >= count || len <= FRAME_HEADER || (!dict && (payload[0] & FRAME_DICT)))
        return -EIO;
    if (w->frame_entry != e || w->frame_freed != freed) {
        w->frame_entry = 0;
        if (ZSTD_decompress_usingDDict(w->zd, w->frame, count * PAGE_SIZE, payload + FRAME_HEADER,
                                       len - FRAME_HEADER, dict) != count * PAGE_SIZE)
            return -EIO;
        w->frame_entry = e;
        w->frame_freed = freed;
    }
    copy_bytes(dest, w->frame + at * PAGE_SIZE, PAGE_SIZE);
    return 0;
}

int load_frame(struct ps_scratch *w, uint64_t index, uint64_t e, void *dest)
{
    return decode_frame(w, index, e, (const uint8_t *)slot_addr(w->ps, entry_chunk(e), entry_slot(e)),
                        entry_len(e), dest);
}

int load_packed(struct ps_scratch *w, uint64_t index, uint64_t e, void *dest)
{
    const uint8_t *record = read_record(w, e);
    uint16_t len;

    if (!record)
        return -EIO;
    memcpy(&len, record, sizeof(len));
    if (len == 0 || len + sizeof(len) > packed_span(e))
        return -EIO;
    if (entry_codec(e) == ENTRY_FRAME)
        return decode_frame(w, index, e, record + sizeof(len), len, dest);
    return decompress_page(w, entry_codec(e), (const char *)record + sizeof(len), len, dest);
}

/* The first class above `cls` with a free slot, or -1. */
static int larger_class_with_room(const struct page_store *ps, int cls)
{
    for (int c = cls + 1; c < (int)CLASS_COUNT; c++)
        if (ps->partial[c] != NO_CHUNK)
            return c;
    return -1;
}

/* Copy a payload of `len` bytes (PAGE_SIZE: the page itself) into a free
 * slot and make its entry. alloc_lock held. */
int put_payload(struct page_store *ps, const void *page, const void *payload, uint32_t len,
                bool background, uint64_t *entry)
{
    int cls = size_class(len), larger;
    uint32_t c = ps->partial[cls], slot;
    char *dest;
    int ret;

    /* The reserve is there for the writes reclaim makes: background moves,
     * which take a new chunk before they free the old slot, leave it its
     * share (reserve_kept_from_moves()). */
    if (c == NO_CHUNK && background && (ps->n_ready <= reserve_kept_from_moves(ps) || at_mem_limit(ps)))
        return -EAGAIN;
    if (c == NO_CHUNK && (!ps->n_ready || at_mem_limit(ps))) {
        /* A new chunk would break the memory limit, or wait for the refill
         * thread: the reserve ran dry, and it is faulting chunks in behind
         * reclaim that is writing to us (the wait times out, the write
         * fails). A larger class's free slot -- swap's frees leave many --
         * costs only its slack. */
        ps->st.reserve_misses += !ps->n_ready;
        if ((larger = larger_class_with_room(ps, cls)) >= 0) {
            c = ps->partial[larger];
            slot = take_slot(ps, c);
            dest = slot_addr(ps, c, slot);
            if (slot_size(larger) == PAGE_SIZE) {       /* a huge slot: the page as it is */
                copy_bytes(dest, page, PAGE_SIZE);
                *entry = entry_stored(c, slot, PAGE_SIZE);
            } else {
                uint16_t n = (uint16_t)len;
                memcpy(dest, &n, sizeof(n));
                copy_bytes(dest + sizeof(n), payload, len);
                *entry = ENTRY_PADDED | entry_stored(c, slot, slot_size(larger));
            }
            return 0;
        }
    }
    if (c == NO_CHUNK && (ret = new_chunk(ps, cls, &c)) < 0)
        return ret;
    slot = take_slot(ps, c);
    copy_bytes(slot_addr(ps, c, slot), payload, len);
    *entry = entry_stored(c, slot, len);
    return 0;
}
