/*
 * The compressed page store: a zsmalloc-like arena in one memfd.
 *
 * Layout of the memfd:
 *   header   one page: struct arena_header
 *   entries  one u64 per device page: what the page holds (entry.h)
 *   fills    one u64 per device page: the word of a same-filled page, the
 *            last access time of a stored one (recompress.c)
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
 * new chunks from a reserve of chunks already faulted in, which a refill
 * thread -- free to wait for reclaim -- tops up from behind (reserve.c),
 * and every array the I/O path touches is faulted in when the store opens
 * or grows.
 *
 * A write compresses into per-thread scratch, copies the payload into a
 * fresh slot, publishes the slot in the page's entry with one 64-bit store,
 * then frees the old slot (publish.c); every move -- compaction,
 * recompression, writeback -- publishes the same way. So the entries alone
 * describe the arena at every instant, and a new I/O worker rebuilds the
 * allocator from them (ps_open with attach), whatever moment the old one
 * died at.
 *
 * Locking: a page is read or changed only under its stripe lock, so a slot
 * is never freed under a reader and a partial-page read-modify-write never
 * loses a concurrent write. alloc_lock guards the allocator, the reserve,
 * the backing device's blocks and the counters; it is taken inside a
 * stripe lock, never the other way round. The background's slices and the
 * passes by hand take each page's lock in turn, never two at once but for
 * a read of neighbouring pages outside RAM, which only tries the others.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define ARENA_MAGIC     "TRUENO11"
#define ARENA_VERSION   11  /* 4: padded entries; 5: the memory limit kept; 6: access times, codec bits;
                               7: frames; 8: the store's codec; 9: pages on a backing device;
                               10: pages in kernel zram; 11: the dictionary */

/* The size a device created with `pages` may grow to (ps_resize): 16 times
 * that, up to 4 TiB, which keeps the address space reserved well inside a
 * 47-bit user space. */
static uint64_t max_pages_for(uint64_t pages)
{
    uint64_t cap = (4ull << 40) / PAGE_SIZE;

    return pages >= cap ? pages : 16 * pages < cap ? 16 * pages : cap;
}

uint64_t ps_arena_length(uint64_t pages)
{
    return arena_length(max_pages_for(pages));
}

/* -- opening: format or attach --------------------------------------------- */

/* Versions 8 to 10 differ only in having no page on a backing device (8),
 * nor in kernel zram (8, 9), nor a dictionary (all: their header's field
 * for it is 0): their arenas are taken (an upgrade keeps every page) and
 * made the current version. */
static bool known_arena(const struct arena_header *h)
{
    static const struct { char magic[9]; uint32_t version; } known[] = {
        { ARENA_MAGIC, ARENA_VERSION }, { "TRUENO10", 10 }, { "TRUENOA9", 9 }, { "TRUENOA8", 8 },
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
    struct page_store *ps = resident_calloc(1, sizeof(*ps));
    struct arena_header found, *h;
    int ret = -ENOMEM;

    if (!ps)
        goto fail;
    codec_init();
    ps->fd = memfd;
    ps->zram_fd = -1;
    ps->pressure_fd = -1;
    ps->cgroup_current_fd = ps->cgroup_max_fd = ps->cgroup_high_fd = -1;
    ps->dict_chunk = NO_CHUNK;
    ps->codec = codec;
    ps->level = level;
    ps->huge_threshold = huge_threshold;
    for (int i = 0; i < LOCK_STRIPES; i++)
        pthread_mutex_init(&ps->stripes[i], NULL);
    pthread_mutex_init(&ps->alloc_lock, NULL);
    for (unsigned cls = 0; cls < CLASS_COUNT; cls++)
        ps->partial[cls] = NO_CHUNK;
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
    ps->meta = reserve_array(ps->max_chunks, sizeof(*ps->meta));
    if (!ps->meta || reserve_init(ps) < 0)
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
        if ((ret = dict_attach(ps)) < 0 || (ret = rebuild(ps)) < 0)
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
        h->dict_chunk = 0;
    }
    if ((ret = reserve_start(ps)) < 0 || (ret = recompressor_new(ps)) < 0 ||
        (ret = compaction_new(ps)) < 0 || (ret = background_start(ps)) < 0)
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
    /* Passes by hand (an admin thread's) see the flag at their next page
     * and return; then the threads stop, then what they used goes. */
    __atomic_store_n(&ps->closing_passes, true, __ATOMIC_RELAXED);
    recompressor_quiesce(ps);
    background_stop(ps);
    compaction_free(ps);
    recompressor_free(ps);
    backing_free(ps);
    reserve_stop(ps);
    dict_free(ps);
    if (ps->base)
        munmap(ps->base, ps->length);
    release_array(ps->meta, ps->max_chunks, sizeof(*ps->meta));
    free(ps);
}
