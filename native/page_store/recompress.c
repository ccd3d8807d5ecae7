/*
 * Cold pages: access times, idle marks and recompression.
 *
 * A stored page's fill word (fills[], used otherwise only by same-filled
 * pages) holds its last access: ps->now when it was last read or written.
 * That clock is seconds of CLOCK_MONOTONIC plus one, ticked by the
 * background (background.c) each period, so the I/O path pays one load
 * and, at most once a second per page, one store -- under the stripe lock
 * it holds anyway, with no system call. 0 marks a page idle
 * (ps_mark_idle), as zram's idle attribute does; the next access clears
 * the mark. CLOCK_MONOTONIC runs on across processes, so a recovered
 * worker reads the times the worker before it left as they were meant.
 *
 * Recompression stores a cold page's payload again with a stronger codec.
 * The background sweeps the page map a slice at a time, each slice bounded
 * in pages looked at and in CPU time, and none in a period in which the
 * device was busy. A page is moved the way compaction moves one: its
 * payload copied out under its stripe lock, decoded and compressed with no
 * lock held, then -- if the page is unchanged and untouched meanwhile, and
 * its slot gets smaller -- put in a new slot and published with one 64-bit
 * store, which frees the old slot. So the I/O path waits at most for one
 * page's copy or publish, and the entries describe every page at every
 * instant (a worker killed mid-move recovers with each page in one form or
 * the other). A page the stronger codec does not shrink is marked
 * ENTRY_SETTLED and never tried again until rewritten; a rewritten page
 * starts in the fast codec, hot.
 *
 * Where the policy's codec is zstd, cold neighbours go further: a run of
 * them inside one group of FRAME_PAGES (entry.h) is compressed as one
 * frame when that fits a slot of at most a page and takes less than their
 * own slots. Measured on real files (the `bench tiers` corpus, zstd:6),
 * frames save another 8% of what the libraries and sources take (3.8 MiB
 * of 49.9), and a read of one page of a frame decodes the whole run (a
 * reader's next page of it is then a copy). A frame is made the way a page
 * is moved: its pages copied out under their group's lock, compressed with
 * none held, and each page's entry published in turn only if none changed
 * meanwhile -- at every instant each entry points at a whole copy of its
 * page.
 *
 * Once enough pages are cold, the first sweep (or pass by hand) trains a
 * zstd dictionary on a sample of them (dictionary.c), and every move after
 * it compresses with it: frames, and pages alone as frames of one.
 *
 * Background moves never wait for the reserve, nor take it below half: a
 * move that would need a new chunk then waits for the next period instead.
 *
 * On a device swap writes to (ps_serving_swap) pages are cold after
 * SWAP_COLD_AFTER seconds, not `after`, and the sweep goes on in busy
 * periods. Swap writes a page out because reclaim found it the coldest the
 * machine has. A page swap reads back stays in the swap cache, its slot
 * kept; or, once the program writes to it, its slot is freed, and we hear
 * of that only when its whole cluster is free (a discard). So the copy
 * here is what is least likely to be read again, and the pages swap left
 * stale would otherwise wait out `after` in the fast codec. A swap storm
 * keeps the device busy for as long as it lasts, which is when memory is
 * short. A page read again within SWAP_COLD_AFTER stays hot.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <sys/prctl.h>

#include "internal.h"

#define SWEEP_REST_MAX   60                    /* seconds between sweeps, at most */
#define SWAP_COLD_AFTER  2                     /* seconds idle before a swap page is cold */
#define TYPE_COLD        (-1)                  /* the background's: idle `after` seconds or marked */

#define DICT_SAMPLES     1024                  /* pages a dictionary is trained on, at most (dictionary.c) */
#define DICT_MIN_SAMPLES 256                   /* fewer to recompress: no dictionary yet */

struct recompressor {
    pthread_mutex_t lock;               /* one pass at a time: the buffers are shared */
    struct ps_scratch *codec;           /* the policy's codec; NULL: none */
    uint32_t after;                     /* seconds idle before recompression; 0: never */
    uint64_t cursor;                    /* the sweep's next page */
    uint64_t idle_counted;              /* idle pages this sweep has seen so far */
    uint64_t moved;                     /* pages this sweep has recompressed so far */
    uint64_t rest_until;                /* clock: the next sweep starts no sooner */
    char payload[PAGE_SIZE];            /* a payload copied out of its slot */
    /* A group's pages for a frame: their entries, access times, payloads
     * copied out, the pages decoded, and the frame made of a run of them. */
    uint64_t group_entries[FRAME_PAGES], group_atimes[FRAME_PAGES];
    char group_payloads[FRAME_PAGES][PAGE_SIZE];
    char group_pages[FRAME_PAGES * PAGE_SIZE];
    char frame[FRAME_HEADER + PAGE_SIZE];
};

static bool closing(struct page_store *ps)
{
    return __atomic_load_n(&ps->closing_passes, __ATOMIC_RELAXED);
}

/* Whether entry `e`, last accessed at `atime`, is one to recompress. */
static bool wanted(uint64_t e, uint64_t atime, int type, uint64_t now, uint32_t after)
{
    if (!(e & ENTRY_STORED) || (e & (ENTRY_CODEC | ENTRY_SETTLED)))
        return false;
    switch (type) {
    case TYPE_COLD:
        return after && is_idle(atime, now, after);
    case PS_RECOMPRESS_IDLE:
        return atime == 0;
    case PS_RECOMPRESS_HUGE:
        return entry_len(e) == PAGE_SIZE && !(e & ENTRY_PADDED);
    default:
        return true;
    }
}

/* Compress the `count` pages at `pages`, the first of them page `first`
 * of its group, into r->frame as a frame (entry.h) of at most `cap` bytes
 * and at most a slot's below a page: its length, or 0. */
static uint32_t compress_frame(struct recompressor *r, struct ps_scratch *w, const char *pages, unsigned first,
                               unsigned count, uint32_t cap)
{
    uint32_t most = cap < PAGE_SIZE - CLASS_DELTA ? cap : PAGE_SIZE - CLASS_DELTA;
    size_t n;

    if (most <= FRAME_HEADER)
        return 0;
    n = ZSTD_compress2(w->zc, r->frame + FRAME_HEADER, most - FRAME_HEADER, pages, (size_t)count * PAGE_SIZE);
    if (ZSTD_isError(n))
        return 0;
    r->frame[0] = (char)(first | (w->dict ? FRAME_DICT : 0));
    r->frame[1] = (char)count;
    return (uint32_t)n + FRAME_HEADER;
}

/* Whether page `index` still holds entry `e`, accessed at `atime`, with
 * `payload` in its slot (its lock held). The payload too: a page rewritten
 * twice within a second may be back in the same slot at the same length,
 * with the same access time, and other contents. */
static bool unchanged(struct page_store *ps, uint64_t index, uint64_t e, uint64_t atime, const char *payload)
{
    return ps->entries[index] == e && ps->fills[index] == atime &&
           memcmp(slot_addr(ps, entry_chunk(e), entry_slot(e)), payload, entry_len(e)) == 0;
}

/* Recompress page `index`, found as entry `e` accessed at `atime`, with
 * w's codec -- with the dictionary, as a frame of one page (entry.h): 1
 * moved, 0 not (changed or read meanwhile, or no smaller: then settled),
 * -EAGAIN when it would have to wait for the reserve. */
static int recompress_one(struct page_store *ps, struct recompressor *r, struct ps_scratch *w,
                          uint64_t index, uint64_t e, uint64_t atime, uint64_t *saved)
{
    pthread_mutex_t *lock = stripe(ps, index);
    uint32_t old_len = entry_len(e), old_slot = slot_size(size_class(old_len)), len;
    uint64_t entry;
    const char *out = w->dict ? r->frame : w->out;
    int ret = 0;

    pthread_mutex_lock(lock);
    if (ps->entries[index] != e) {
        pthread_mutex_unlock(lock);
        return 0;
    }
    copy_bytes(r->payload, slot_addr(ps, entry_chunk(e), entry_slot(e)), old_len);
    pthread_mutex_unlock(lock);
    if (decode_payload(w, e, r->payload, w->page) < 0)
        return 0;                       /* left for a read to report */
    len = w->dict ? compress_frame(r, w, w->page, (unsigned)(index % FRAME_PAGES), 1, old_slot - 1)
                  : compress_page(w, w->page, old_slot - 1);

    pthread_mutex_lock(lock);
    pthread_mutex_lock(&ps->alloc_lock);
    if (!unchanged(ps, index, e, atime, r->payload))
        goto out;                       /* rewritten, or read: hot again */
    if (!len || slot_size(size_class(len)) >= old_slot) {
        __atomic_store_n(&ps->entries[index], e | ENTRY_SETTLED, __ATOMIC_RELEASE);
        goto out;
    }
    if ((ret = put_payload(ps, w->page, out, len, true, &entry)) < 0)
        goto out;
    entry |= (uint64_t)(w->dict ? ENTRY_FRAME : entry_codec_of(w->codec)) << ENTRY_CODEC_SHIFT;
    publish(ps, index, entry);
    if (w->dict)
        account(ps, entry, HELD_FRAME, 1);
    ps->st.recompressions++;
    ps->st.recompress_saved += old_len - len;
    *saved += old_len - len;
    ret = 1;
out:
    pthread_mutex_unlock(&ps->alloc_lock);
    pthread_mutex_unlock(lock);
    return ret;
}

static bool makes_frames(const struct ps_scratch *w)
{
    return w && w->codec == PS_CODEC_ZSTD;
}

/* Whether entry `e`, accessed at `atime`, may join a frame: a page the
 * pass would recompress -- a raw one too, unless settled (incompressible):
 * LZ4 leaves raw what it cannot take below 7/8 of a page, which zstd in a
 * frame often can. */
static bool frameable(uint64_t e, uint64_t atime, int type, uint64_t now, uint32_t after)
{
    return type != PS_RECOMPRESS_HUGE && wanted(e, atime, type, now, after);
}

/* What a payload would take in LZ4: zstd's frames of single pages are
 * 5/8 of LZ4's on real data, where a run of them compresses to about as
 * much again, LZ4's to about half. */
static uint32_t lz4_equivalent(const struct page_store *ps, uint64_t e)
{
    unsigned codec = entry_codec(e) ? entry_codec(e) : entry_codec_of(ps->codec);

    return codec == ENTRY_ZSTD ? entry_len(e) * 8 / 5 : entry_len(e);
}

/* Publish the frame in r->frame (`len` bytes) for pages [first, end) of the
 * group at `group`, unless one of them changed or was read since it was
 * copied out: 1 made, 0 not, -EAGAIN when it would wait for the reserve. */
static int publish_frame(struct page_store *ps, struct recompressor *r, uint64_t group, unsigned first,
                         unsigned end, uint32_t len, uint64_t *saved)
{
    uint64_t entry, old_bytes = 0;
    int ret = 0;

    pthread_mutex_lock(stripe(ps, group));
    pthread_mutex_lock(&ps->alloc_lock);
    for (unsigned k = first; k < end; k++) {
        if (!unchanged(ps, group + k, r->group_entries[k], r->group_atimes[k], r->group_payloads[k]))
            goto out;
        old_bytes += entry_len(r->group_entries[k]);
    }
    if ((ret = put_payload(ps, NULL, r->frame, len, true, &entry)) < 0)
        goto out;
    entry |= (uint64_t)ENTRY_FRAME << ENTRY_CODEC_SHIFT;
    for (unsigned k = first; k < end; k++)
        publish(ps, group + k, entry);
    account(ps, entry, HELD_FRAME, 1);
    ps->st.recompressions += end - first;
    ps->st.recompress_saved += old_bytes - len;
    *saved += old_bytes - len;
    ret = 1;
out:
    pthread_mutex_unlock(&ps->alloc_lock);
    pthread_mutex_unlock(stripe(ps, group));
    return ret;
}

/*
 * Make frames of the group of pages at `group` that a pass of `type` takes,
 * with w's codec (zstd): the pages put in frames, or -EAGAIN; *worked is
 * set if it took any page up (it spent CPU on the group). The pages left
 * out are recompressed one by one as the pass goes on. A run is cut
 * where its pages' present payloads add up to two pages (LZ4's; zstd's
 * count 8/5 as much), then shortened until it fits. Measured on the
 * `bench tiers` corpus, that takes 2.2 compressions a frame from LZ4
 * payloads, 1.5 from zstd ones, for 97% of the saving of trying every
 * length.
 */
static int frame_group(struct page_store *ps, struct recompressor *r, struct ps_scratch *w, uint64_t group,
                       int type, uint64_t now, uint32_t after, uint64_t *saved, bool *worked)
{
    uint64_t pages = device_pages(ps);
    unsigned n = pages - group < FRAME_PAGES ? (unsigned)(pages - group) : FRAME_PAGES, made = 0;
    bool wanted_page[FRAME_PAGES];
    int ret;

    pthread_mutex_lock(stripe(ps, group));
    for (unsigned k = 0; k < n; k++) {
        uint64_t e = r->group_entries[k] = ps->entries[group + k];
        r->group_atimes[k] = ps->fills[group + k];
        wanted_page[k] = frameable(e, r->group_atimes[k], type, now, after);
        if (wanted_page[k]) {
            copy_bytes(r->group_payloads[k], slot_addr(ps, entry_chunk(e), entry_slot(e)), entry_len(e));
            *worked = true;
        }
    }
    pthread_mutex_unlock(stripe(ps, group));
    for (unsigned k = 0; k < n; k++)
        if (wanted_page[k] && decode_payload(w, r->group_entries[k], r->group_payloads[k],
                                             r->group_pages + k * PAGE_SIZE) < 0)
            wanted_page[k] = false;     /* left for a read to report */

    for (unsigned first = 0, end; first + 1 < n; first = end) {
        uint32_t held = 0, estimate = 0, len = 0;

        if (!wanted_page[first]) {
            end = first + 1;
            continue;
        }
        for (end = first; end < n && wanted_page[end] &&
             (end == first || estimate + lz4_equivalent(ps, r->group_entries[end]) <= 2 * PAGE_SIZE); end++)
            estimate += lz4_equivalent(ps, r->group_entries[end]);
        while (end - first >= 2 &&
               !(len = compress_frame(r, w, r->group_pages + first * PAGE_SIZE, first, end - first, PAGE_SIZE)))
            end--;
        if (end - first < 2) {
            end = first + 1;
            continue;
        }
        for (unsigned k = first; k < end; k++)
            held += slot_size(size_class(entry_len(r->group_entries[k])));
        if (slot_size(size_class(len)) >= held)
            continue;
        if ((ret = publish_frame(ps, r, group, first, end, len, saved)) < 0)
            return made ? (int)made : ret;
        made += ret ? end - first : 0;
    }
    return (int)made;
}

/*
 * Train the store's dictionary (dictionary.c) on a sample of the pages a
 * pass of `type` would put in frames now, spread evenly over the device:
 * when there is none yet, w makes frames (zstd), enough pages are found,
 * and memory is to spare (the sample takes 4 MiB, training as much again,
 * both given back at once). The pages are copied out under their locks
 * one at a time, as a move copies them.
 */
static void train_dictionary(struct page_store *ps, struct recompressor *r, struct ps_scratch *w, int type,
                             uint64_t now, uint32_t after)
{
    uint64_t pages = device_pages(ps), found = 0, seen = 0, n;
    uint32_t taken = 0;
    char *samples;

    if (ps->dict || !makes_frames(w) || !memory_to_spare(ps))
        return;
    for (uint64_t i = 0; i < pages; i++)
        found += frameable(__atomic_load_n(&ps->entries[i], __ATOMIC_ACQUIRE),
                           __atomic_load_n(&ps->fills[i], __ATOMIC_RELAXED), type, now, after);
    n = found < DICT_SAMPLES ? found : DICT_SAMPLES;
    if (n < DICT_MIN_SAMPLES || !(samples = malloc(n * PAGE_SIZE)))
        return;
    for (uint64_t i = 0; i < pages && taken < n; i++) {
        uint64_t e = __atomic_load_n(&ps->entries[i], __ATOMIC_ACQUIRE);
        bool copied;

        if (!frameable(e, __atomic_load_n(&ps->fills[i], __ATOMIC_RELAXED), type, now, after) ||
            seen++ < taken * found / n)
            continue;
        pthread_mutex_lock(stripe(ps, i));
        if ((copied = ps->entries[i] == e))
            copy_bytes(r->payload, slot_addr(ps, entry_chunk(e), entry_slot(e)), entry_len(e));
        pthread_mutex_unlock(stripe(ps, i));
        if (copied && decode_payload(w, e, r->payload, samples + (uint64_t)taken * PAGE_SIZE) == 0)
            taken++;
    }
    if (taken >= DICT_MIN_SAMPLES)
        dict_make(ps, samples, taken);
    free(samples);
}

/* Seconds idle before the background takes a page as cold (see the top);
 * 0: never. */
static uint32_t cold_after(struct page_store *ps, const struct recompressor *r)
{
    bool swap = __atomic_load_n(&ps->st.serving_swap, __ATOMIC_RELAXED);

    return swap && r->after > SWAP_COLD_AFTER ? SWAP_COLD_AFTER : r->after;
}

bool recompress_slice(struct page_store *ps, const struct period *p)
{
    struct recompressor *r = ps->recompressor;
    uint64_t now = p->now, pages = device_pages(ps), saved = 0;
    bool swept = false;

    if ((p->busy && !__atomic_load_n(&ps->st.serving_swap, __ATOMIC_RELAXED)) || now < r->rest_until ||
        pthread_mutex_trylock(&r->lock))
        return false;                   /* busy, resting, or a pass by hand is running */
    uint32_t after = cold_after(ps, r);
    if (r->codec && r->cursor == 0 && !p->pressed)
        train_dictionary(ps, r, r->codec, TYPE_COLD, now, after);
    if (r->codec)
        dict_load(ps, r->codec);
    for (uint64_t scanned = 0; scanned < SLICE_SCAN_PAGES; scanned++) {
        if (r->cursor >= pages) {       /* the sweep is done */
            pthread_mutex_lock(&ps->alloc_lock);
            ps->st.idle_pages = r->idle_counted;
            pthread_mutex_unlock(&ps->alloc_lock);
            swept = r->moved > 0;
            r->cursor = r->idle_counted = r->moved = 0;
            r->rest_until = now + (after / 4 < 1 ? 1 : after / 4 > SWEEP_REST_MAX ? SWEEP_REST_MAX
                                   : after / 4);
            break;
        }
        uint64_t i = r->cursor++;
        bool worked = false;
        int ret = 0;
        if (i % FRAME_PAGES == 0 && makes_frames(r->codec) &&
            (ret = frame_group(ps, r, r->codec, i, TYPE_COLD, now, after, &saved, &worked)) < 0) {
            r->cursor--;                /* no room without waiting: next period */
            break;
        }
        r->moved += (uint64_t)ret;
        uint64_t e = __atomic_load_n(&ps->entries[i], __ATOMIC_ACQUIRE);
        uint64_t atime = __atomic_load_n(&ps->fills[i], __ATOMIC_RELAXED);
        if ((e & ENTRY_STORED) && is_idle(atime, now, after ? after : UINT32_MAX))
            r->idle_counted++;
        if (r->codec && wanted(e, atime, TYPE_COLD, now, after)) {
            if ((ret = recompress_one(ps, r, r->codec, i, e, atime, &saved)) == -EAGAIN) {
                r->cursor--;
                break;
            }
            r->moved += (uint64_t)ret;
            worked = true;
        }
        if (worked && budget_spent(p->cpu_until))
            break;
    }
    pthread_mutex_unlock(&r->lock);
    return swept;
}

int ps_recompress(struct page_store *ps, int type, int codec, int level, uint64_t max_pages,
                  uint64_t *done, uint64_t *saved)
{
    struct recompressor *r = ps->recompressor;
    struct ps_scratch *w;
    uint64_t now = __atomic_load_n(&ps->now, __ATOMIC_RELAXED);

    *done = *saved = 0;
    if (codec == PS_CODEC_NONE || type < PS_RECOMPRESS_IDLE || type > PS_RECOMPRESS_ALL)
        return -EINVAL;
    if (!(w = scratch_new(ps, codec, level)))
        return -ENOMEM;
    /* It frees memory reclaim may be waiting for: it must not wait on it. */
    prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0);
    pthread_mutex_lock(&r->lock);
    train_dictionary(ps, r, w, type, now, 0);
    dict_load(ps, w);
    for (uint64_t i = 0; i < device_pages(ps) && (!max_pages || *done < max_pages) && !closing(ps); i++) {
        int ret = 0;
        bool worked;                    /* a pass by hand is not bounded in CPU */

        /* Frames only where a whole group is within the pages asked for.
         * A move that found the reserve low is tried again once the refill
         * has caught up; while memory is short the pass stops there. */
        if (i % FRAME_PAGES == 0 && makes_frames(w) && (!max_pages || *done + FRAME_PAGES <= max_pages)) {
            while ((ret = frame_group(ps, r, w, i, type, now, 0, saved, &worked)) == -EAGAIN &&
                   reserve_refilled_for_moves(ps) == 0)
                ;
            if (ret < 0)
                break;
        }
        *done += (uint64_t)ret;

        uint64_t e = __atomic_load_n(&ps->entries[i], __ATOMIC_ACQUIRE);
        uint64_t atime = __atomic_load_n(&ps->fills[i], __ATOMIC_RELAXED);

        if (!wanted(e, atime, type, now, 0))
            continue;
        while ((ret = recompress_one(ps, r, w, i, e, atime, saved)) == -EAGAIN &&
               reserve_refilled_for_moves(ps) == 0)
            ;
        if (ret == -EAGAIN)
            break;
        *done += ret;
    }
    scratch_free(w);
    pthread_mutex_unlock(&r->lock);     /* the last touch of the store: see recompressor_quiesce() */
    return 0;
}

uint64_t ps_mark_idle(struct page_store *ps, uint32_t age_seconds)
{
    struct recompressor *r = ps->recompressor;
    uint64_t now = __atomic_load_n(&ps->now, __ATOMIC_RELAXED), marked = 0;

    pthread_mutex_lock(&r->lock);
    for (uint64_t i = 0; i < device_pages(ps) && !closing(ps); i++) {
        uint64_t atime = __atomic_load_n(&ps->fills[i], __ATOMIC_RELAXED);

        if (!(__atomic_load_n(&ps->entries[i], __ATOMIC_RELAXED) & ENTRY_STORED) || !atime ||
            !is_idle(atime, now, age_seconds))
            continue;
        /* Under the page's lock: an access in between keeps its time. */
        pthread_mutex_lock(stripe(ps, i));
        if ((ps->entries[i] & ENTRY_STORED) && ps->fills[i] && is_idle(ps->fills[i], now, age_seconds)) {
            __atomic_store_n(&ps->fills[i], 0, __ATOMIC_RELAXED);
            marked++;
        }
        pthread_mutex_unlock(stripe(ps, i));
    }
    pthread_mutex_unlock(&r->lock);
    return marked;
}

int ps_set_recompression(struct page_store *ps, int codec, int level, uint32_t after_seconds)
{
    struct recompressor *r = ps->recompressor;
    struct ps_scratch *w = NULL, *old;

    if (codec != PS_CODEC_NONE && !(w = scratch_new(ps, codec, level)))
        return -ENOMEM;
    if (w)
        dict_load(ps, w);
    pthread_mutex_lock(&r->lock);
    old = r->codec;
    r->codec = w;
    r->after = after_seconds;
    r->rest_until = 0;
    pthread_mutex_unlock(&r->lock);
    if (old)
        scratch_free(old);
    return 0;
}

int recompressor_new(struct page_store *ps)
{
    struct recompressor *r = calloc(1, sizeof(*r));

    if (!r)
        return -ENOMEM;
    pthread_mutex_init(&r->lock, NULL);
    /* Faulted in now (the worker locks its memory on fault): moves copy
     * into these under a page's stripe lock, which a write may wait for. */
    populate(r, sizeof(*r));
    ps->recompressor = r;
    return 0;
}

void recompressor_quiesce(struct page_store *ps)
{
    struct recompressor *r = ps->recompressor;

    /* A pass by hand (an admin thread's) has seen closing_passes at its
     * next page and returned once its lock is free: nothing of it touches
     * the store after that. */
    if (r) {
        pthread_mutex_lock(&r->lock);
        pthread_mutex_unlock(&r->lock);
    }
}

void recompressor_free(struct page_store *ps)
{
    struct recompressor *r = ps->recompressor;

    if (!r)
        return;
    if (r->codec)
        scratch_free(r->codec);
    free(r);
    ps->recompressor = NULL;
}
