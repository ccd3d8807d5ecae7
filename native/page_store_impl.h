/*
 * The page store's insides, shared by its six files (not parsed by cffi):
 *   page_store.c      the arena: layout, allocator, reserve, page map, the
 *                     store's operations, opening and closing
 *   page_codec.c      the codecs, entropy estimates and each thread's scratch
 *   page_compact.c    compaction, the background thread, and the rebuild of
 *                     the allocator on attach
 *   page_recompress.c access times, idle marks and recompression
 *   page_backing.c    the backing device: writeback, and reads from it
 *   page_zram.c       kernel zram as a tier: pages routed there, read back
 * The layout and locking rules are described at the top of page_store.c.
 */
#ifndef TRUENO_PAGE_STORE_IMPL_H
#define TRUENO_PAGE_STORE_IMPL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <lz4.h>
#include <lz4hc.h>
#include <zstd.h>

#include "page_store.h"

#define PAGE_SIZE       ((uint32_t)PS_PAGE_SIZE)
#define CHUNK_SIZE      PS_CHUNK_SIZE
#define CLASS_DELTA     16u
#define CLASS_COUNT     (PAGE_SIZE / CLASS_DELTA)
#define LOCK_STRIPES    256
#define NO_CHUNK        UINT32_MAX
#define RESERVE_CHUNKS  128             /* 8 MiB faulted in ahead of writes */
#define RESERVE_WAIT_MS 1000            /* then writes fail rather than hang */

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define ENTRY_SAME      (1ull << 63)
#define ENTRY_STORED    (1ull << 62)
/* In a larger class's slot, its first two bytes the payload's length (see
 * put_payload()); the entry's length is the slot's. */
#define ENTRY_PADDED    (1ull << 61)
/* The decoder of a recompressed payload (ENTRY_LZ4 or ENTRY_ZSTD: any
 * level of a family decodes alike); 0 for the store's own codec;
 * ENTRY_FRAME for a page in a frame (below). */
#define ENTRY_CODEC_SHIFT 59
#define ENTRY_CODEC     (3ull << ENTRY_CODEC_SHIFT)
#define ENTRY_LZ4       1u
#define ENTRY_ZSTD      2u
#define ENTRY_FRAME     3u
/* Not worth recompressing (tried, or stored raw for its entropy) until
 * it is rewritten. */
#define ENTRY_SETTLED   (1ull << 58)
/* What compaction and recompression keep when they move a payload. */
#define ENTRY_FLAGS     (ENTRY_PADDED | ENTRY_CODEC | ENTRY_SETTLED)
/* On the backing device (page_backing.c): ENTRY_BACKED without
 * ENTRY_STORED (a combination no slot's entry has), the block below. */
#define ENTRY_BACKED    ENTRY_PADDED
/* ... or, with this bit too, in the kernel zram tier (page_zram.c), at
 * the page's own index. */
#define ENTRY_ZRAM      (1ull << 58)
#define ENTRY_BLOCK_MASK (ENTRY_ZRAM - 1)
#define ENTRY_CHUNK_SHIFT 24
#define ENTRY_CHUNK_MASK ((1ull << 34) - 1)    /* 2^31 chunks and a class's worth more: 64 TiB raw */
#define ENTRY_SLOT_SHIFT  12
#define ENTRY_FIELD_MASK  0xfffull

/*
 * A frame: a run of neighbouring cold pages compressed together with zstd
 * into one slot (page_recompress.c), which saves what each page's own
 * frame would repeat. The run lies inside one group of FRAME_PAGES pages
 * (aligned), whose pages share a stripe lock. Every page of the run has
 * the same entry: ENTRY_FRAME, the slot, the slot's payload length. The
 * payload is a header -- the run's first page within its group and its
 * length in pages -- then one zstd frame of the run's pages. The slot is
 * freed when the last entry pointing at it changes (frame_release()).
 */
#define FRAME_PAGES     8
#define FRAME_HEADER    2

#define ARENA_MAGIC     "TRUENO10"
#define ARENA_VERSION   10  /* 4: padded entries; 5: the memory limit kept; 6: access times, codec bits;
                               7: frames; 8: the store's codec; 9: pages on a backing device;
                               10: pages in kernel zram */

struct backing {
    int fd;                             /* O_DIRECT: reads and writes of whole, aligned pages */
    uint64_t blocks;                    /* the device's size in pages */
    uint64_t *used;                     /* a bit a block (alloc_lock) */
    uint64_t next;                      /* where take_block() looks first */
    pthread_mutex_t lock;               /* one writeback at a time */
    struct ps_scratch *scratch;         /* the writeback's decoding */
    char *batch;                        /* PS_WRITEBACK_BATCH pages, aligned */
    uint64_t cursor;                    /* where the background's next slice starts */
    uint64_t index[PS_WRITEBACK_BATCH], entry[PS_WRITEBACK_BATCH], block[PS_WRITEBACK_BATCH];
};

struct arena_header {
    char magic[8];
    uint32_t version;
    uint32_t chunk_size;
    uint64_t pages;                     /* the device's size now */
    uint64_t max_pages;                 /* the size the layout has room for */
    uint64_t mem_limit;                 /* as last set: a new worker keeps it */
    uint32_t codec;                     /* the store's own codec (entries with codec bits 0) */
    uint32_t pad;
};

/* Allocator state of one chunk; free slots link through their first bytes. */
struct chunk_meta {
    int16_t cls;                        /* -1: not in use */
    uint16_t used;
    uint16_t bump;                      /* slots below this have been handed out */
    uint16_t free_head;                 /* first free slot + 1, or 0 */
    uint32_t prev, next;                /* in its class's list of chunks with room */
};

struct page_store {
    int fd;
    int codec, level;
    uint32_t huge_threshold;
    uint64_t pages;                     /* the device's size now (ps_resize) */
    uint64_t max_pages, max_chunks;     /* what the layout has room for */
    uint64_t chunk_limit;               /* chunks usable at this size, bookkeeping touched */
    uint64_t length;
    char *base;
    uint64_t *entries, *fills;
    char *chunks;

    pthread_mutex_t stripes[LOCK_STRIPES];
    pthread_mutex_t alloc_lock;
    struct chunk_meta *meta;
    uint32_t partial[CLASS_COUNT];      /* heads of the chunks-with-room lists */
    uint32_t *free_chunks;              /* stack of released chunk numbers */
    uint64_t n_free_chunks, chunk_high;
    uint32_t *ready;                    /* the reserve: free chunks faulted in */
    uint32_t n_ready, reserve_target;
    pthread_cond_t reserve_low, reserve_filled;
    pthread_t refill_thread;
    uint32_t n_refilling;               /* chunks being faulted in for the reserve */
    bool starved;                       /* a wait timed out: fail fast until refilled */
    bool refill_running, closing;
    uint32_t class_free[CLASS_COUNT];   /* free slots in each class's live chunks */
    struct compaction *compaction;      /* page_compact.c */
    struct recompressor *recompressor;  /* page_recompress.c */
    struct ps_scratch *scratches;       /* every thread's, linked: their request counts */
    uint64_t now;                       /* the access clock (page_recompress.c) */
    uint64_t frames_freed;              /* frame slots freed, ever: decoded frames go stale */
    bool closing_passes;                /* ps_close: passes by hand stop */
    uint32_t entropy_threshold;         /* ENTROPY_ONE a bit: stored raw from here up; 0: never */
    uint64_t mem_limit;
    struct backing *backing;            /* page_backing.c; NULL: none */
    bool writeback_limit_enabled;       /* then writebacks stop after writeback_limit pages */
    uint64_t writeback_limit;
    uint32_t writeback_after;           /* seconds idle before the background writes a page back; 0: never */
    bool spill_starved;                 /* a wait for spilled room timed out: fail fast until room */
    uint64_t background_periods;        /* ended, ever (alloc_lock): what a write at the limit waits on */
    int zram_fd;                        /* page_zram.c: the kernel zram tier, O_DIRECT; -1: none */
    uint64_t zram_blocks;               /* its size in pages */
    uint32_t zram_below;                /* entropy (ENTROPY_ONE a bit) below which pages go there */
    struct ps_stats st;
};

struct ps_scratch {
    /* Read-modify-write of partial pages; direct reads from the backing
     * device (aligned, as O_DIRECT wants: scratch_new aligns the struct). */
    char page[PAGE_SIZE] __attribute__((aligned(PS_PAGE_SIZE)));
    struct page_store *ps;
    int codec, level;                   /* what it compresses with */
    struct ps_scratch *next;            /* in ps->scratches */
    uint64_t pages_served;              /* read or written through it: the background reads it */
    void *lz4_state;                    /* LZ4: extState, reset on every call */
    LZ4_stream_t *lz4_stream;           /* LZ4: stream, cheaply reset per page */
    LZ4_streamHC_t *lz4hc_stream;
    ZSTD_CCtx *zc;
    ZSTD_DCtx *zd;
    char out[PAGE_SIZE + 64];           /* compressed payloads before their slot */
    /* The last frame decoded (load_frame()): valid while its entry is the
     * same and no frame slot has been freed since (ps->frames_freed). */
    uint64_t frame_entry, frame_freed;
    char frame[FRAME_PAGES * PAGE_SIZE];
};


/*
 * Page-sized copies and fills with the string instructions, as the kernel
 * does: fast on x86-64 since ERMS (2012). They matter under emulation too:
 * QEMU's TCG runs `rep movsb` as one helper, while glibc's AVX2 memcpy and
 * memset are emulated instruction by instruction (measured in the guest: a
 * 16 KiB memset costs 34 us there, 0.17 us natively).
 */
static inline void copy_bytes(void *dst, const void *src, size_t n)
{
#if defined(__x86_64__)
    __asm__ volatile("rep movsb" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
#else
    memcpy(dst, src, n);
#endif
}

static inline void fill_words(void *dst, uint64_t word, size_t n_words)
{
#if defined(__x86_64__)
    __asm__ volatile("rep stosq" : "+D"(dst), "+c"(n_words) : "a"(word) : "memory");
#else
    uint64_t *w = dst;
    for (size_t i = 0; i < n_words; i++)
        w[i] = word;
#endif
}

static inline uint32_t slot_size(int cls) { return (uint32_t)(cls + 1) * CLASS_DELTA; }
static inline uint32_t slots_per_chunk(int cls) { return CHUNK_SIZE / slot_size(cls); }
/*
 * A payload's class: the largest slot size that fits as many slots in a
 * chunk as a slot rounded up from `len` would. Sizes that share a slot count
 * share a class (as zsmalloc merges its classes): the slack each class's
 * last, partly filled chunk costs is paid about 110 times, not 256.
 */
static inline int size_class(uint32_t len)
{
    uint32_t slots = CHUNK_SIZE / ((len + CLASS_DELTA - 1) / CLASS_DELTA * CLASS_DELTA);
    return (int)(CHUNK_SIZE / slots / CLASS_DELTA) - 1;
}

static inline uint64_t entry_stored(uint64_t chunk, uint32_t slot, uint32_t len)
{
    return ENTRY_STORED | chunk << ENTRY_CHUNK_SHIFT | (uint64_t)slot << ENTRY_SLOT_SHIFT | (len - 1);
}
static inline bool entry_backed(uint64_t e)
{
    return (e & (ENTRY_SAME | ENTRY_STORED | ENTRY_BACKED)) == ENTRY_BACKED;
}
static inline uint64_t entry_backed_at(uint64_t block) { return ENTRY_BACKED | block; }
static inline bool entry_in_zram(uint64_t e) { return entry_backed(e) && (e & ENTRY_ZRAM); }
static inline uint64_t entry_zram(uint64_t index) { return ENTRY_BACKED | ENTRY_ZRAM | index; }
static inline uint64_t entry_block(uint64_t e) { return e & ENTRY_BLOCK_MASK; }
static inline unsigned entry_codec(uint64_t e) { return (unsigned)((e & ENTRY_CODEC) >> ENTRY_CODEC_SHIFT); }
static inline uint64_t entry_chunk(uint64_t e) { return (e >> ENTRY_CHUNK_SHIFT) & ENTRY_CHUNK_MASK; }
static inline uint32_t entry_slot(uint64_t e) { return (e >> ENTRY_SLOT_SHIFT) & ENTRY_FIELD_MASK; }
static inline uint32_t entry_len(uint64_t e) { return (uint32_t)(e & ENTRY_FIELD_MASK) + 1; }

static inline char *slot_addr(struct page_store *ps, uint64_t chunk, uint32_t slot)
{
    return ps->chunks + chunk * CHUNK_SIZE + (uint64_t)slot * slot_size(ps->meta[chunk].cls);
}

/* Idle: marked (atime 0), or not accessed for `age` seconds by `now`. */
static inline bool is_idle(uint64_t atime, uint64_t now, uint32_t age)
{
    return atime == 0 || (atime <= now && now - atime >= age);
}

/* A page's lock, shared with its group's pages: a frame's pages change together. */
static inline pthread_mutex_t *stripe(struct page_store *ps, uint64_t index)
{
    return &ps->stripes[index / FRAME_PAGES % LOCK_STRIPES];
}

/* A stored page was read or written now (its stripe lock held): its fill
 * word takes the access clock (page_recompress.c), written only when the
 * clock has moved on. */
static inline void note_access(struct page_store *ps, uint64_t index)
{
    uint64_t now = __atomic_load_n(&ps->now, __ATOMIC_RELAXED);

    if (__atomic_load_n(&ps->fills[index], __ATOMIC_RELAXED) != now)
        __atomic_store_n(&ps->fills[index], now, __ATOMIC_RELAXED);
}

/* Internal to the store's files, not exported from the module. */
#define PS_INTERNAL __attribute__((visibility("hidden")))

/* page_store.c: the allocator (alloc_lock held) */
PS_INTERNAL void list_add(struct page_store *ps, uint32_t c);
PS_INTERNAL void list_del(struct page_store *ps, uint32_t c);
PS_INTERNAL uint32_t take_slot(struct page_store *ps, uint32_t c);
PS_INTERNAL void free_slot(struct page_store *ps, uint32_t c, uint32_t slot);
PS_INTERNAL uint64_t map_bytes(uint64_t pages);
PS_INTERNAL void punch_hole(struct page_store *ps, uint64_t offset, uint64_t len);
/* Fault in [addr, addr + len) for writing, so that no later access faults. */
PS_INTERNAL void populate(void *addr, uint64_t len);
/* Arrays of one entry per chunk the layout has room for: address space
 * reserved at once, memory touched only for the first chunk_limit entries
 * (touch_array), as the device's size needs them. */
PS_INTERNAL void *reserve_array(const struct page_store *ps, size_t entry_size);
PS_INTERNAL void release_array(const struct page_store *ps, void *array, size_t entry_size);
PS_INTERNAL void touch_array(void *array, size_t entry_size, uint64_t from, uint64_t to);
PS_INTERNAL void raise_chunk_limit(struct page_store *ps, uint64_t limit);

/* page_codec.c */
PS_INTERNAL bool page_is_filled(const void *page);
/* The payload length in w->out, or 0: the page does not compress below
 * `cap` bytes. */
PS_INTERNAL uint32_t compress_page(struct ps_scratch *w, const void *page, uint32_t cap);
/* `codec`: ENTRY_LZ4 or ENTRY_ZSTD. */
PS_INTERNAL int decompress_page(struct ps_scratch *w, unsigned codec, const char *payload, uint32_t len,
                                void *dest);
PS_INTERNAL unsigned entry_codec_of(int codec);
/* Once a process, before any scratch: the entropy table, and which way
 * LZ4 starts a block (the faster here). */
PS_INTERNAL void codec_init(void);
/* A scratch compressing with `codec` at `level`, not counted in
 * ps->scratches (`ps` NULL: a codec's own, ps_codec_new). */
PS_INTERNAL struct ps_scratch *scratch_new(struct page_store *ps, int codec, int level);
/* Bits of entropy a byte, estimated from a sample of the page, in
 * ENTROPY_ONE units. */
#define ENTROPY_ONE 65536u
PS_INTERNAL uint32_t page_entropy(const void *page);

/* page_store.c: one page's payload and its entry (its stripe lock held) */
/* A stored entry's payload (`payload`: where it is, or a copy) decoded. */
PS_INTERNAL int decode_payload(struct ps_scratch *w, uint64_t e, const char *payload, void *dest);
/* Page `index` out of the frame of entry `e`, the decoded frame kept in
 * w->frame for the run's next page. */
PS_INTERNAL int load_frame(struct ps_scratch *w, uint64_t index, uint64_t e, void *dest);
/* CLOCK_MONOTONIC `ms` from now, for the timed waits on alloc_lock's conditions. */
PS_INTERNAL void deadline_after(struct timespec *until, uint32_t ms);
/* Copy a payload into a free slot, as put_payload() does for writes; for
 * a background move (`background`), never from a larger class's slot nor
 * from the reserve's lower half: -EAGAIN instead. alloc_lock held. */
PS_INTERNAL int put_payload(struct page_store *ps, const void *page, const void *payload, uint32_t len,
                            bool background, uint64_t *entry);
PS_INTERNAL void publish(struct page_store *ps, uint64_t index, uint64_t entry);
/* Entry `e` of a frame has left page `index` (the group's lock and alloc_lock
 * held): the frame's slot is freed if no page of the group points at it. */
PS_INTERNAL void frame_release(struct page_store *ps, uint64_t index, uint64_t e);

/* page_compact.c: the allocator rebuilt from the entries a previous I/O
 * worker left (ps_open with attach), 0 or -EUCLEAN; the compactor's scratch
 * and background thread, started and stopped with the store. */
PS_INTERNAL int rebuild(struct page_store *ps);
PS_INTERNAL int compaction_start(struct page_store *ps);
PS_INTERNAL void compaction_stop(struct page_store *ps);
PS_INTERNAL uint64_t compaction_bytes(const struct page_store *ps);
/* Touch the compactor's scratch for chunks [from, to): before chunk_limit
 * rises to `to`. */
PS_INTERNAL void compaction_grow(struct page_store *ps, uint64_t from, uint64_t to);
/* Start the background thread's next period now, not at its time. */
PS_INTERNAL void background_wake(struct page_store *ps);

/* page_recompress.c: the access clock, ticked by the background thread;
 * the recompressor, made with the store and run a slice at a time by the
 * background thread. */
PS_INTERNAL void tick_clock(struct page_store *ps);
PS_INTERNAL int recompressor_new(struct page_store *ps);
PS_INTERNAL void recompressor_quiesce(struct page_store *ps);
PS_INTERNAL void recompressor_free(struct page_store *ps);
/* Whether a sweep that moved pages ended in it (their old slots left
 * chunks sparse: worth a compaction pass). */
PS_INTERNAL bool recompress_slice(struct page_store *ps);

/* page_backing.c: a written-back page read (its stripe lock held), 0 or
 * -EIO; a block given back (alloc_lock held); the device let go. */
PS_INTERNAL int read_backed(struct ps_scratch *w, uint64_t e, void *dest);
/* Page `index` and the next ones, up to `max_pages`, when they are outside
 * RAM on neighbouring blocks (written back, or in the zram tier), read into
 * aligned `dest` with one read (the first group's stripe lock held; the
 * next groups' are tried): the pages read, 0 when that is not the case
 * (fewer than two), or -EIO. */
PS_INTERNAL int read_outside_run(struct ps_scratch *w, uint64_t index, uint32_t max_pages, void *dest);
PS_INTERNAL void free_block(struct page_store *ps, uint64_t block);
PS_INTERNAL void backing_free(struct page_store *ps);
/* The background's share (page_compact.c's thread): pages idle
 * writeback_after and incompressible ones written back, and near the memory
 * limit the coldest spilled; whether it moved any. */
PS_INTERNAL bool writeback_slice(struct page_store *ps);
/* A write at the memory limit, holding no lock: 0 once the background
 * has spilled room, -ENOSPC when it cannot. */
PS_INTERNAL int wait_for_spill(struct page_store *ps);
PS_INTERNAL bool at_mem_limit(const struct page_store *ps);

/* page_zram.c, the page's stripe lock held: whether a page of `entropy`
 * goes to the zram tier; its write there (0, or -EIO: store it in RAM);
 * its read from there (0 or -EIO); its block discarded, once it has left. */
PS_INTERNAL bool zram_wanted(const struct page_store *ps, uint64_t index, uint32_t entropy);
PS_INTERNAL int write_zram(struct ps_scratch *w, uint64_t index, const void *page);
PS_INTERNAL int read_zram(struct ps_scratch *w, uint64_t index, void *dest);
PS_INTERNAL void leave_zram(struct page_store *ps, uint64_t index);

#endif
