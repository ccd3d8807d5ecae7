/*
 * The compressed page store: a zsmalloc-like arena in one memfd.
 *
 * Layout of the memfd:
 *   header   one page: struct arena_header
 *   entries  one u64 per device page: what the page holds (see ENTRY_*)
 *   fills    one u64 per device page: the word of a same-filled page, the
 *            last access time of a stored one (page_recompress.c)
 *   chunks   CHUNK_SIZE each; a chunk serves one 16-byte size class, its
 *            slots packed end to end
 * The maps and the chunk area are laid out for the largest size the device
 * may grow to online (max_pages_for()); room beyond the size is a hole in
 * the memfd and address space, never memory. The maps are faulted in for
 * the device's size when the store opens or grows (8 bytes each per device
 * page, as zram's table); a chunk costs memory while in use and goes back
 * (a hole is punched) once empty.
 *
 * Serving I/O never faults in a page. A device that holds swap is written
 * to by the kernel's reclaim, when free memory is exhausted; a fault there
 * would wait for reclaim, which waits for that very write. So writes take
 * new chunks from a reserve of chunks already faulted in, and a refill
 * thread -- free to wait for reclaim -- tops the reserve up from behind.
 * When reclaim outruns it, a write takes a larger class's free slot; only
 * when there is none does it wait for the refill, and fail after a while.
 *
 * A write compresses into per-thread scratch, copies the payload into a
 * fresh slot, publishes the slot in the page's entry with one 64-bit store,
 * then frees the old slot. So the entries alone describe the arena at every
 * instant, and a new I/O worker rebuilds the allocator from them (ps_open with
 * attach), whatever moment the old one died at.
 *
 * Locking: a page is read or changed only under its stripe lock, so a slot
 * is never freed under a reader and a partial-page read-modify-write never
 * loses a concurrent write. alloc_lock guards the allocator, the reserve
 * and the counters; it is taken inside a stripe lock, never the other way
 * round.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "page_store_impl.h"

static const char zero_page[PAGE_SIZE];

static uint64_t round_up(uint64_t n, uint64_t to) { return (n + to - 1) / to * to; }

uint64_t map_bytes(uint64_t pages) { return round_up(pages * 8, PAGE_SIZE); }

static uint64_t chunks_offset(uint64_t max_pages)
{
    return round_up(PAGE_SIZE + 2 * map_bytes(max_pages), CHUNK_SIZE);
}

/* The size a device created with `pages` may grow to (ps_resize): 16 times
 * that, up to 4 TiB, which keeps the address space reserved well inside a
 * 47-bit user space. */
static uint64_t max_pages_for(uint64_t pages)
{
    uint64_t cap = (4ull << 40) / PAGE_SIZE;

    return pages >= cap ? pages : 16 * pages < cap ? 16 * pages : cap;
}

static uint64_t max_chunks_for(uint64_t pages)
{
    /* Every page stored raw, twice over for fragmentation, plus one partly
     * filled chunk per class. Room never used is only address space. */
    return 2 * round_up(pages * PAGE_SIZE, CHUNK_SIZE) / CHUNK_SIZE + CLASS_COUNT;
}

static uint64_t arena_length(uint64_t max_pages)
{
    return chunks_offset(max_pages) + max_chunks_for(max_pages) * CHUNK_SIZE;
}

uint64_t ps_arena_length(uint64_t pages)
{
    return arena_length(max_pages_for(pages));
}

/* -- giving memory back ---------------------------------------------------- */

void punch_hole(struct page_store *ps, uint64_t offset, uint64_t len)
{
    /* fallocate, not madvise(MADV_REMOVE): the latter refuses mlocked maps.
     * A failure only leaves memory allocated; the data stays correct. */
    fallocate(ps->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)len);
}

/* -- the allocator (alloc_lock held) -------------------------------------- */

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

void list_del(struct page_store *ps, uint32_t c)
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

/* Whether a chunk never used, or given back, is left beyond the reserve. */
static bool unused_chunks_left(const struct page_store *ps)
{
    return ps->n_free_chunks || ps->chunk_high < ps->chunk_limit;
}

/* Such a chunk's number, or NO_CHUNK. */
static uint32_t unused_chunk(struct page_store *ps)
{
    if (ps->n_free_chunks)
        return ps->free_chunks[--ps->n_free_chunks];
    if (ps->chunk_high < ps->chunk_limit)
        return (uint32_t)ps->chunk_high++;
    return NO_CHUNK;                    /* fragmentation beyond the reservation */
}

void deadline_after(struct timespec *until, uint32_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, until);
    until->tv_nsec += (long)(ms % 1000) * 1000000L;
    until->tv_sec += ms / 1000 + until->tv_nsec / 1000000000L;
    until->tv_nsec %= 1000000000L;
}

static int wait_for_reserve(struct page_store *ps)
{
    struct timespec until;

    /* One write waits; while the reserve stays empty the others fail at
     * once, so that the batch completes and reclaim sees its errors soon. */
    if (ps->starved)
        return -ENOMEM;
    deadline_after(&until, RESERVE_WAIT_MS);
    pthread_cond_signal(&ps->reserve_low);
    while (!ps->n_ready && (ps->n_refilling || unused_chunks_left(ps)))
        if (pthread_cond_timedwait(&ps->reserve_filled, &ps->alloc_lock, &until))
            break;
    ps->starved = !ps->n_ready;
    return ps->n_ready ? 0 : -ENOMEM;
}

bool at_mem_limit(const struct page_store *ps)
{
    return ps->mem_limit && (ps->st.live_chunks + 1) * CHUNK_SIZE > ps->mem_limit;
}

static int new_chunk(struct page_store *ps, int cls, uint32_t *out)
{
    uint32_t c;

    if (at_mem_limit(ps))
        return -ENOSPC;
    if (!ps->n_ready && wait_for_reserve(ps) < 0)
        return -ENOMEM;
    c = ps->ready[--ps->n_ready];
    pthread_cond_signal(&ps->reserve_low);
    ps->meta[c] = (struct chunk_meta){ .cls = (int16_t)cls, .prev = NO_CHUNK, .next = NO_CHUNK };
    ps->class_free[cls] += slots_per_chunk(cls);
    list_add(ps, c);
    if (++ps->st.live_chunks > ps->st.peak_live_chunks)
        ps->st.peak_live_chunks = ps->st.live_chunks;
    *out = c;
    return 0;
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
        if (ps->n_ready + ps->n_refilling < ps->reserve_target) {  /* faulted in: keep it */
            ps->ready[ps->n_ready++] = c;
            ps->starved = false;
            pthread_cond_broadcast(&ps->reserve_filled);
            return;
        }
        punch_hole(ps, (uint64_t)(ps->chunks - ps->base) + (uint64_t)c * CHUNK_SIZE, CHUNK_SIZE);
        ps->free_chunks[ps->n_free_chunks++] = c;
        return;
    }
    memcpy(slot_addr(ps, c, slot), &m->free_head, sizeof(m->free_head));
    m->free_head = (uint16_t)(slot + 1);
}

/* -- the reserve ----------------------------------------------------------- */

void populate(void *addr, uint64_t len)
{
    uintptr_t start = (uintptr_t)addr / PAGE_SIZE * PAGE_SIZE;

    if (len == 0)
        return;
    len += (uintptr_t)addr - start;
    if (madvise((void *)start, len, MADV_POPULATE_WRITE) == 0)
        return;
    for (uint64_t off = 0; off < len; off += PAGE_SIZE)     /* before Linux 5.14 */
        __atomic_fetch_or((volatile char *)start + off, 0, __ATOMIC_RELAXED);
}

void *reserve_array(const struct page_store *ps, size_t entry_size)
{
    void *array = mmap(NULL, ps->max_chunks * entry_size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

    return array == MAP_FAILED ? NULL : array;
}

void release_array(const struct page_store *ps, void *array, size_t entry_size)
{
    if (array)
        munmap(array, ps->max_chunks * entry_size);
}

void touch_array(void *array, size_t entry_size, uint64_t from, uint64_t to)
{
    if (to > from)
        populate((char *)array + from * entry_size, (to - from) * entry_size);
}

/* Make chunks below `limit` usable: their bookkeeping touched first, then
 * the limit raised (under alloc_lock), so that serving I/O never faults. */
void raise_chunk_limit(struct page_store *ps, uint64_t limit)
{
    uint64_t from = ps->chunk_limit;

    if (limit <= from)
        return;
    touch_array(ps->free_chunks, sizeof(*ps->free_chunks), from, limit);
    for (uint64_t c = from; c < limit; c++)
        ps->meta[c].cls = -1;
    compaction_grow(ps, from, limit);
    pthread_mutex_lock(&ps->alloc_lock);
    ps->chunk_limit = limit;
    pthread_cond_signal(&ps->reserve_low);
    pthread_mutex_unlock(&ps->alloc_lock);
}

/* Fault chunks in until the reserve is full, one at a time so that each
 * helps at once. alloc_lock held on entry and exit, dropped while faulting
 * -- which may wait for reclaim, and so for this store's own writes. */
static void refill(struct page_store *ps)
{
    uint32_t c;

    while (!ps->closing && ps->n_ready + ps->n_refilling < ps->reserve_target &&
           (c = unused_chunk(ps)) != NO_CHUNK) {
        ps->n_refilling = 1;
        pthread_mutex_unlock(&ps->alloc_lock);
        populate(ps->chunks + (uint64_t)c * CHUNK_SIZE, CHUNK_SIZE);
        pthread_mutex_lock(&ps->alloc_lock);
        ps->n_refilling = 0;
        ps->starved = false;
        ps->ready[ps->n_ready++] = c;
        pthread_cond_broadcast(&ps->reserve_filled);
    }
}

static void *refill_main(void *arg)
{
    struct page_store *ps = arg;

    /* Realtime, so that its allocations may dip into the kernel's reserves
     * (as __GFP_HIGH ones do) and beat the workload that is pushing memory
     * out to this store. Without CAP_SYS_NICE it stays a normal thread. */
    struct sched_param realtime = { .sched_priority = 1 };

    pthread_setschedparam(pthread_self(), SCHED_FIFO, &realtime);
    prctl(PR_SET_NAME, "ublk-reserve");
    /* Writes wait for it: it must not wait on reclaim writing to us. */
    prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0);
    pthread_mutex_lock(&ps->alloc_lock);
    while (!ps->closing) {
        refill(ps);
        if (!ps->closing && (ps->n_ready >= ps->reserve_target || !unused_chunks_left(ps)))
            pthread_cond_wait(&ps->reserve_low, &ps->alloc_lock);
    }
    pthread_mutex_unlock(&ps->alloc_lock);
    return NULL;
}

/* Point page `index` at `entry`, then free what it held before. Holds the
 * page's stripe lock and alloc_lock. A frame's entry counts its page here,
 * its payload where the frame is made and freed. */
void publish(struct page_store *ps, uint64_t index, uint64_t entry)
{
    uint64_t old = ps->entries[index];

    __atomic_store_n(&ps->entries[index], entry, __ATOMIC_RELEASE);
    if (entry) {
        ps->st.pages_stored++;
        if (entry_in_zram(entry)) {
            ps->st.zram_pages++;
        } else if (entry_backed(entry)) {
            /* its block was counted when taken */
        } else if (entry & ENTRY_SAME) {
            ps->st.same_pages++;
        } else if (entry_codec(entry) == ENTRY_FRAME) {
            ps->st.recompressed_pages++;
            ps->st.frame_pages++;
        } else {
            ps->st.compr_data_size += entry_len(entry);
            ps->st.huge_pages += entry_len(entry) == PAGE_SIZE;
            if (entry & ENTRY_CODEC) {
                ps->st.recompressed_pages++;
                ps->st.recompressed_bytes += entry_len(entry);
            }
        }
    }
    if (!old)
        return;
    ps->st.pages_stored--;
    if (entry_in_zram(old)) {
        ps->st.zram_pages--;            /* its caller discards its block (leave_zram) */
        return;
    }
    if (entry_backed(old)) {
        free_block(ps, entry_block(old));
        return;
    }
    if (old & ENTRY_SAME) {
        ps->st.same_pages--;
        return;
    }
    if (entry_codec(old) == ENTRY_FRAME) {
        ps->st.recompressed_pages--;
        ps->st.frame_pages--;
        frame_release(ps, index, old);
        return;
    }
    ps->st.compr_data_size -= entry_len(old);
    ps->st.huge_pages -= entry_len(old) == PAGE_SIZE;
    if (old & ENTRY_CODEC) {
        ps->st.recompressed_pages--;
        ps->st.recompressed_bytes -= entry_len(old);
    }
    free_slot(ps, (uint32_t)entry_chunk(old), entry_slot(old));
}

void frame_release(struct page_store *ps, uint64_t index, uint64_t e)
{
    uint64_t group = index / FRAME_PAGES * FRAME_PAGES;

    for (uint64_t i = group; i < group + FRAME_PAGES && i < ps->max_pages; i++)
        if (ps->entries[i] == e)
            return;
    ps->st.frames--;
    ps->st.compr_data_size -= entry_len(e);
    ps->st.recompressed_bytes -= entry_len(e);
    ps->st.frame_bytes -= entry_len(e);
    __atomic_store_n(&ps->frames_freed, ps->frames_freed + 1, __ATOMIC_RELAXED);
    free_slot(ps, (uint32_t)entry_chunk(e), entry_slot(e));
}

/* -- one whole page (its stripe lock held) -------------------------------- */

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

/* Page `index` out of the frame of entry `e`: decoded whole into w->frame,
 * where the next page of the run is found without decoding it again. */
int load_frame(struct ps_scratch *w, uint64_t index, uint64_t e, void *dest)
{
    struct page_store *ps = w->ps;
    const uint8_t *payload = (const uint8_t *)slot_addr(ps, entry_chunk(e), entry_slot(e));
    uint32_t first = payload[0], count = payload[1], len = entry_len(e);
    uint32_t at = (uint32_t)(index % FRAME_PAGES) - first;
    uint64_t freed = __atomic_load_n(&ps->frames_freed, __ATOMIC_RELAXED);

    if (count > FRAME_PAGES || at >= count || len <= FRAME_HEADER)
        return -EIO;
    if (w->frame_entry != e || w->frame_freed != freed) {
        w->frame_entry = 0;
        if (ZSTD_decompressDCtx(w->zd, w->frame, count * PAGE_SIZE, payload + FRAME_HEADER,
                                len - FRAME_HEADER) != count * PAGE_SIZE)
            return -EIO;
        w->frame_entry = e;
        w->frame_freed = freed;
    }
    copy_bytes(dest, w->frame + at * PAGE_SIZE, PAGE_SIZE);
    return 0;
}

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
    if (entry_backed(e))
        return read_backed(w, e, dest);
    note_access(ps, index);
    if (entry_codec(e) == ENTRY_FRAME)
        return load_frame(w, index, e, dest);
    return decode_payload(w, e, slot_addr(ps, entry_chunk(e), entry_slot(e)), dest);
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
     * which take a new chunk before they free the old slot, leave it half. */
    if (c == NO_CHUNK && background && (ps->n_ready <= ps->reserve_target / 2 || at_mem_limit(ps)))
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
            run = read_outside_run(w, index, len / PAGE_SIZE, out);
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

int ps_write(struct ps_scratch *w, uint64_t offset, uint32_t len, const void *src)
{
    const char *in = src;

    while (len) {
        uint64_t index = offset / PAGE_SIZE;
        uint32_t start = offset % PAGE_SIZE;
        uint32_t n = PAGE_SIZE - start < len ? PAGE_SIZE - start : len;
        int ret;

        w->pages_served++;
        for (bool waited = false; ; waited = true) {
            if (n == PAGE_SIZE) {
                pthread_mutex_lock(stripe(w->ps, index));
                ret = store_page(w, index, in);
                pthread_mutex_unlock(stripe(w->ps, index));
            } else {
                ret = patch_page(w, index, start, n, in);
            }
            /* At the memory limit with a backing device, the background
             * thread spills cold pages there: wait for it once, holding no
             * page's lock (page_backing.c). */
            if (ret != -ENOSPC || waited || wait_for_spill(w->ps) < 0)
                break;
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

/* -- settings and figures -------------------------------------------------- */

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
    out->reserve_chunks = ps->n_ready + ps->n_refilling;
    out->map_bytes = 2 * map_bytes(ps->pages);
    out->arena_bytes = PAGE_SIZE + out->map_bytes + (ps->st.live_chunks + out->reserve_chunks) * CHUNK_SIZE;
    out->metadata_bytes = ps->chunk_limit * (sizeof(struct chunk_meta) + sizeof(uint32_t))
                          + ps->reserve_target * sizeof(uint32_t) + sizeof(*ps) + compaction_bytes(ps);
    pthread_mutex_unlock(&ps->alloc_lock);
}

uint64_t ps_pages(struct page_store *ps)
{
    return __atomic_load_n(&ps->pages, __ATOMIC_RELAXED);
}

uint64_t ps_max_pages(struct page_store *ps)
{
    return ps->max_pages;
}

uint64_t ps_pages_stored_from(struct page_store *ps, uint64_t first)
{
    uint64_t n = 0, pages = ps_pages(ps);

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

/* -- opening: format or attach --------------------------------------------- */

/* Versions 8 and 9 differ only in having no page on a backing device (8)
 * nor in kernel zram (both): their arenas are taken (an upgrade keeps
 * every page) and made the current version. */
static bool known_arena(const struct arena_header *h)
{
    static const struct { char magic[9]; uint32_t version; } known[] = {
        { ARENA_MAGIC, ARENA_VERSION }, { "TRUENOA9", 9 }, { "TRUENOA8", 8 },
    };

    for (size_t i = 0; i < sizeof(known) / sizeof(*known); i++)
        if (memcmp(h->magic, known[i].magic, 8) == 0 && h->version == known[i].version)
            return true;
    return false;
}

/* The size an arena holds (attach): its header read before it is mapped,
 * checked against the memfd, or -EUCLEAN. */
static int read_header(int memfd, struct arena_header *h)
{
    struct stat st;

    if (pread(memfd, h, sizeof(*h), 0) != (ssize_t)sizeof(*h) || fstat(memfd, &st) < 0 ||
        !known_arena(h) ||
        h->chunk_size != CHUNK_SIZE || !h->pages || h->pages > h->max_pages ||
        h->max_pages > PS_MAX_PAGES || arena_length(h->max_pages) > (uint64_t)st.st_size)
        return -EUCLEAN;
    return 0;
}

int ps_arena_check(int memfd, uint64_t pages, int codec)
{
    struct arena_header h;
    int ret = read_header(memfd, &h);

    if (ret < 0)
        return ret;
    if (h.pages < pages)
        return -EUCLEAN;
    /* Pages in the store's own codec carry no codec bits: decoding them
     * with another would return garbage, not an error. */
    if (h.codec != (uint32_t)codec)
        return -EMEDIUMTYPE;
    return 0;
}

struct page_store *ps_open(int memfd, uint64_t pages, int codec, int level,
                           uint32_t huge_threshold, int attach, int *err)
{
    struct page_store *ps = calloc(1, sizeof(*ps));
    struct arena_header found, *h;
    int ret = -ENOMEM;

    if (!ps)
        goto fail;
    codec_init();
    ps->fd = memfd;
    ps->zram_fd = -1;
    ps->codec = codec;
    ps->level = level;
    ps->huge_threshold = huge_threshold;
    for (int i = 0; i < LOCK_STRIPES; i++)
        pthread_mutex_init(&ps->stripes[i], NULL);
    pthread_mutex_init(&ps->alloc_lock, NULL);
    for (unsigned cls = 0; cls < CLASS_COUNT; cls++)
        ps->partial[cls] = NO_CHUNK;
    pthread_condattr_t monotonic;
    pthread_condattr_init(&monotonic);
    pthread_condattr_setclock(&monotonic, CLOCK_MONOTONIC);
    pthread_cond_init(&ps->reserve_filled, &monotonic);
    pthread_cond_init(&ps->reserve_low, NULL);
    pthread_condattr_destroy(&monotonic);
    if (attach) {
        /* The arena's own size: a resize since the device was made
         * changed it, and it is never smaller than the kernel's. */
        if ((ret = ps_arena_check(memfd, pages, codec)) < 0 || (ret = read_header(memfd, &found)) < 0)
            goto fail;
        ps->pages = found.pages;
        ps->max_pages = found.max_pages;
        ps->mem_limit = found.mem_limit;
    } else {
        ps->pages = pages;
        ps->max_pages = max_pages_for(pages);
    }
    ps->max_chunks = max_chunks_for(ps->max_pages);
    ps->length = arena_length(ps->max_pages);

    ret = -ENOMEM;
    ps->meta = reserve_array(ps, sizeof(*ps->meta));
    ps->free_chunks = reserve_array(ps, sizeof(*ps->free_chunks));
    ps->reserve_target = RESERVE_CHUNKS;
    ps->ready = malloc(ps->reserve_target * sizeof(*ps->ready));
    if (!ps->meta || !ps->free_chunks || !ps->ready)
        goto fail;
    /* Bookkeeping for the chunks this size may use, touched now: the I/O
     * path must not fault (see the top of this file). */
    raise_chunk_limit(ps, max_chunks_for(ps->pages));

    ps->base = mmap(NULL, ps->length, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (ps->base == MAP_FAILED) {
        ps->base = NULL;
        ret = -errno;
        goto fail;
    }
    ps->entries = (uint64_t *)(ps->base + PAGE_SIZE);
    ps->fills = (uint64_t *)(ps->base + PAGE_SIZE + map_bytes(ps->max_pages));
    ps->chunks = ps->base + chunks_offset(ps->max_pages);
    h = (struct arena_header *)ps->base;
    populate(h, PAGE_SIZE);
    populate(ps->entries, ps->pages * sizeof(*ps->entries));
    populate(ps->fills, ps->pages * sizeof(*ps->fills));
    if (attach) {
        if ((ret = rebuild(ps)) < 0)
            goto fail;
        memcpy(h->magic, ARENA_MAGIC, 8);
        h->version = ARENA_VERSION;
    } else {
        memcpy(h->magic, ARENA_MAGIC, 8);
        h->version = ARENA_VERSION;
        h->chunk_size = CHUNK_SIZE;
        h->pages = ps->pages;
        h->max_pages = ps->max_pages;
        h->mem_limit = 0;
        h->codec = (uint32_t)codec;
    }
    pthread_mutex_lock(&ps->alloc_lock);
    refill(ps);
    pthread_mutex_unlock(&ps->alloc_lock);
    if ((ret = -pthread_create(&ps->refill_thread, NULL, refill_main, ps)))
        goto fail;
    ps->refill_running = true;
    if ((ret = recompressor_new(ps)) < 0 || (ret = compaction_start(ps)) < 0)
        goto fail;
    *err = 0;
    return ps;
fail:
    if (ps)
        ps_close(ps);
    *err = ret;
    return NULL;
}

void ps_close(struct page_store *ps)
{
    recompressor_quiesce(ps);
    compaction_stop(ps);
    recompressor_free(ps);
    backing_free(ps);
    if (ps->refill_running) {
        pthread_mutex_lock(&ps->alloc_lock);
        ps->closing = true;
        pthread_cond_signal(&ps->reserve_low);
        pthread_mutex_unlock(&ps->alloc_lock);
        pthread_join(ps->refill_thread, NULL);
    }
    if (ps->base)
        munmap(ps->base, ps->length);
    release_array(ps, ps->meta, sizeof(*ps->meta));
    release_array(ps, ps->free_chunks, sizeof(*ps->free_chunks));
    free(ps->ready);
    free(ps);
}
