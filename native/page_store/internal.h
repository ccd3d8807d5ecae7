/*
 * The page store's insides, shared by its files (not parsed by cffi). Its
 * files, each one job, lowest layer first: a file calls only files listed
 * before it, never one after.
 *   memory.h, entry.h  copies and faults; the entry's bits
 *   codec.c            the codecs, entropy estimates and each thread's scratch
 *   account.c          the counters of what the store holds
 *   reserve.c          chunks never used or given back, and the reserve of
 *                      chunks faulted in ahead of writes (its thread)
 *   alloc.c            slots in chunks by size class; the allocator rebuilt
 *                      from the page map on attach
 *   backing.c          the backing device: its blocks, reads from it
 *   zram_tier.c        kernel zram as a tier: pages written there, read back
 *   publish.c          an entry published, the room of the old one freed
 *   payload.c          a payload put in a slot, and decoded from one
 *   dictionary.c       the zstd dictionary of cold pages: trained, kept in
 *                      a chunk, found again on attach
 *   compact.c          compaction          } the background's slices,
 *   recompress.c       recompression       } and their passes by hand
 *   writeback.c        writeback, spill    }
 *   background.c       the one background thread: its period, wake-ups,
 *                      busy check and CPU budget; writes waiting for a spill
 *   page_io.c          the store's operations: read, write, discard
 *   settings.c         settings, figures and resize
 *   arena.c            the arena's layout, header versions, open and close
 * The layout and the rules every file keeps (swap safety, locking) are
 * described at the top of arena.c.
 */
#ifndef TRUENO_PAGE_STORE_INTERNAL_H
#define TRUENO_PAGE_STORE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <lz4.h>
#include <lz4hc.h>
#include <zstd.h>

#include "page_store.h"
#include "entry.h"
#include "memory.h"

#define PAGE_SIZE       ((uint32_t)PS_PAGE_SIZE)
#define CHUNK_SIZE      PS_CHUNK_SIZE
#define CLASS_DELTA     16u
#define CLASS_COUNT     (PAGE_SIZE / CLASS_DELTA)
#define LOCK_STRIPES    256
#define NO_CHUNK        UINT32_MAX
#define RESERVE_CHUNKS  128             /* the reserve while memory is short: 8 MiB (reserve.c) */
/* Entries a background slice looks at in one period (recompression's
 * sweep, writeback's): bounded work while the device is quiet. */
#define SLICE_SCAN_PAGES 65536

struct arena_header {
    char magic[8];
    uint32_t version;
    uint32_t chunk_size;
    uint64_t pages;                     /* the device's size now */
    uint64_t max_pages;                 /* the size the layout has room for */
    uint64_t mem_limit;                 /* as last set: a new worker keeps it */
    uint32_t codec;                     /* the store's own codec (entries with codec bits 0) */
    uint32_t dict_chunk;                /* the dictionary's chunk + 1 (dictionary.c); 0: none */
};

/* Allocator state of one chunk; free slots link through their first bytes. */
struct chunk_meta {
    int16_t cls;                        /* -1: not in use */
    uint16_t used;
    uint16_t bump;                      /* slots below this have been handed out */
    uint16_t free_head;                 /* first free slot + 1, or 0 */
    uint32_t prev, next;                /* in its class's list of chunks with room */
};

/* The backing device (backing.c) and the writeback's buffers (writeback.c). */
#define WRITEBACK_PAGES (8 * PS_WRITEBACK_BATCH)   /* pages a batch may hold, packed */
#define RECORD_BLOCKS   16              /* blocks a read of packed records in order reads at once */
struct backing {
    int fd;                             /* O_DIRECT: reads and writes of whole, aligned pages */
    uint64_t blocks;                    /* the device's size in pages */
    uint64_t *used;                     /* a bit a block (alloc_lock) */
    uint16_t *records;                  /* a count a block: the packed records on it (alloc_lock) */
    uint64_t n_used;                    /* blocks taken: published, or in a batch (alloc_lock) */
    uint64_t writes;                    /* writes to it, ever: blocks read before may hold other data now */
    uint64_t next;                      /* where take_block() looks first */
    pthread_mutex_t lock;               /* one writeback at a time */
    struct ps_scratch *scratch;         /* the writeback's decoding */
    /* A batch (writeback.c): PS_WRITEBACK_BATCH blocks, aligned, and each
     * one's device block and whether records are packed in it; its pages,
     * each with the entry it had and the entry it will have. */
    char *batch;
    uint64_t block[PS_WRITEBACK_BATCH];
    bool packs[PS_WRITEBACK_BATCH];
    uint64_t index[WRITEBACK_PAGES], entry[WRITEBACK_PAGES], to[WRITEBACK_PAGES];
    uint64_t cursor;                    /* where the background's next slice starts */
};

struct page_store {
    int fd;
    int codec, level;
    uint32_t huge_threshold;
    uint64_t pages;                     /* the device's size now (ps_resize) */
    uint64_t max_pages, max_chunks;     /* what the layout has room for */
    uint64_t length;
    char *base;
    uint64_t *entries, *fills;
    char *chunks;

    pthread_mutex_t stripes[LOCK_STRIPES];
    pthread_mutex_t alloc_lock;
    /* reserve.c */
    uint64_t chunk_limit;               /* chunks usable at this size, bookkeeping touched */
    uint32_t *free_chunks;              /* stack of released chunk numbers */
    uint64_t n_free_chunks, chunk_high;
    uint32_t *ready;                    /* the reserve: free chunks faulted in */
    uint32_t n_ready, reserve_target;
    pthread_cond_t reserve_low, reserve_filled;
    pthread_t refill_thread;
    uint32_t n_refilling;               /* chunks being faulted in for the reserve */
    uint64_t chunks_refilled;           /* faulted in by the refill, ever: its progress */
    bool starved;                       /* a wait timed out: fail fast until refilled */
    int pressure_fd;                    /* /proc/pressure/memory, or -1 */
    int cgroup_current_fd, cgroup_max_fd, cgroup_high_fd; /* this daemon's cgroup's memory files, or -1 */
    uint64_t watermarks;                /* the zones' high watermarks, bytes */
    uint64_t reserve_margin;            /* headroom below this is short */
    bool refill_running, closing;
    /* alloc.c */
    struct chunk_meta *meta;
    uint32_t partial[CLASS_COUNT];      /* heads of the chunks-with-room lists */
    uint32_t class_free[CLASS_COUNT];   /* free slots in each class's live chunks */
    uint64_t mem_limit;
    /* the background and its slices */
    struct background *background;      /* background.c */
    struct compaction *compaction;      /* compact.c */
    struct recompressor *recompressor;  /* recompress.c */
    struct ps_scratch *scratches;       /* every I/O thread's, linked: their request counts */
    uint64_t now;                       /* the access clock (background.c ticks it) */
    uint64_t frames_freed;              /* frame slots freed, ever: decoded frames go stale */
    bool closing_passes;                /* ps_close: passes by hand stop */
    uint32_t entropy_threshold;         /* ENTROPY_ONE a bit: stored raw from here up; 0: never */
    struct backing *backing;            /* backing.c; NULL: none */
    /* dictionary.c: the dictionary, in chunk dict_chunk, once trained */
    uint32_t dict_chunk;                /* NO_CHUNK: none */
    const char *dict;                   /* in that chunk; NULL: none */
    uint32_t dict_len;
    ZSTD_DDict *ddict;                  /* decoding with it, shared by every thread */
    bool writeback_limit_enabled;       /* then writebacks stop after writeback_limit pages */
    uint64_t writeback_limit;
    uint32_t writeback_after;           /* seconds idle before the background writes a page back; 0: never */
    int zram_fd;                        /* zram_tier.c: the kernel zram tier, O_DIRECT; -1: none */
    uint64_t zram_blocks;               /* its size in pages */
    uint32_t zram_below;                /* entropy (ENTROPY_ONE a bit) below which pages go there */
    struct ps_stats st;
};

struct ps_scratch {
    /* Read-modify-write of partial pages; direct reads from the backing
     * device (aligned, as O_DIRECT wants: scratch_new aligns the struct). */
    char page[PAGE_SIZE] __attribute__((aligned(PS_PAGE_SIZE)));
    /* Blocks read for packed records (read_record()): the first, how
     * many, and the backing's count of writes when they were read. */
    char record[RECORD_BLOCKS * PAGE_SIZE] __attribute__((aligned(PS_PAGE_SIZE)));
    uint64_t record_block, record_blocks, record_writes;
    struct page_store *ps;              /* whose pages it decodes; NULL: a codec's own */
    int codec, level;                   /* what it compresses with */
    struct ps_scratch *next;            /* in ps->scratches */
    uint64_t pages_served;              /* read or written through it: the background reads it */
    void *lz4_state;                    /* LZ4: extState, reset on every call */
    LZ4_stream_t *lz4_stream;           /* LZ4: stream, cheaply reset per page */
    LZ4_streamHC_t *lz4hc_stream;
    ZSTD_CCtx *zc;
    ZSTD_DCtx *zd;
    bool dict;                          /* zc compresses with the store's dictionary (dict_load()) */
    char out[PAGE_SIZE + 64];           /* compressed payloads before their slot */
    /* The last frame decoded (load_frame()): valid while its entry is the
     * same and no frame slot has been freed since (ps->frames_freed). */
    uint64_t frame_entry, frame_freed;
    char frame[FRAME_PAGES * PAGE_SIZE];
};

/* What one period of the background lets a slice do (background.c). */
struct period {
    uint64_t now;                       /* the access clock */
    uint64_t cpu_until;                 /* the thread's CPU time at which the period's budget is spent */
    bool busy;                          /* the device served many pages: only work memory is short of */
    bool pressed;                       /* the machine reclaims: memory is short */
};

static inline uint64_t thread_cpu_ns(void)
{
    struct timespec t;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

/* Whether the budget that ends at `cpu_until` is spent (UINT64_MAX: none). */
static inline bool budget_spent(uint64_t cpu_until)
{
    return cpu_until != UINT64_MAX && thread_cpu_ns() > cpu_until;
}

/* CLOCK_MONOTONIC `ms` from now, for the timed waits on alloc_lock's conditions. */
static inline void deadline_after(struct timespec *until, uint32_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, until);
    until->tv_nsec += (long)(ms % 1000) * 1000000L;
    until->tv_sec += ms / 1000 + until->tv_nsec / 1000000000L;
    until->tv_nsec %= 1000000000L;
}

/*
 * The arena's layout (arena.c describes it): the header page, the two maps
 * of one u64 a page, then the chunks, laid out for the largest size the
 * device may grow to.
 */
static inline uint64_t round_up(uint64_t n, uint64_t to) { return (n + to - 1) / to * to; }

static inline uint64_t map_bytes(uint64_t pages) { return round_up(pages * 8, PAGE_SIZE); }

static inline uint64_t chunks_offset(uint64_t max_pages)
{
    return round_up(PAGE_SIZE + 2 * map_bytes(max_pages), CHUNK_SIZE);
}

/* The chunks a device of `pages` may use: every page stored raw, twice
 * over for fragmentation, plus one partly filled chunk per class. Room
 * never used is only address space. */
static inline uint64_t max_chunks_for(uint64_t pages)
{
    return 2 * round_up(pages * PAGE_SIZE, CHUNK_SIZE) / CHUNK_SIZE + CLASS_COUNT;
}

static inline uint64_t arena_length(uint64_t max_pages)
{
    return chunks_offset(max_pages) + max_chunks_for(max_pages) * CHUNK_SIZE;
}

/* The device's size in pages now (ps_resize changes it). */
static inline uint64_t device_pages(struct page_store *ps)
{
    return __atomic_load_n(&ps->pages, __ATOMIC_RELAXED);
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

static inline char *slot_addr(struct page_store *ps, uint64_t chunk, uint32_t slot)
{
    return ps->chunks + chunk * CHUNK_SIZE + (uint64_t)slot * slot_size(ps->meta[chunk].cls);
}

static inline uint64_t chunk_offset(const struct page_store *ps, uint64_t chunk)
{
    return (uint64_t)(ps->chunks - ps->base) + chunk * CHUNK_SIZE;
}

/* Idle: marked (atime 0), or not accessed for `age` seconds by `now`. */
static inline bool is_idle(uint64_t atime, uint64_t now, uint32_t age)
{
    return atime == 0 || (atime <= now && now - atime >= age);
}

/* Whether a page of `index`'s group still holds frame entry `e` (the page
 * itself has left it): its slot or record is then still in use. */
static inline bool frame_held(const struct page_store *ps, uint64_t index, uint64_t e)
{
    uint64_t group = index / FRAME_PAGES * FRAME_PAGES;

    for (uint64_t i = group; i < group + FRAME_PAGES && i < ps->max_pages; i++)
        if (ps->entries[i] == e)
            return true;
    return false;
}

/* Whether frame entry `e` of page `index` was met already, at an earlier
 * page of its group (a rebuild counts a frame once). */
static inline bool frame_seen(const struct page_store *ps, uint64_t index, uint64_t e)
{
    for (uint64_t i = index / FRAME_PAGES * FRAME_PAGES; i < index; i++)
        if (ps->entries[i] == e)
            return true;
    return false;
}

/* A page's lock, shared with its group's pages: a frame's pages change together. */
static inline pthread_mutex_t *stripe(struct page_store *ps, uint64_t index)
{
    return &ps->stripes[index / FRAME_PAGES % LOCK_STRIPES];
}

/* A stored page was read or written now (its stripe lock held): its fill
 * word takes the access clock (recompress.c), written only when the clock
 * has moved on. */
static inline void note_access(struct page_store *ps, uint64_t index)
{
    uint64_t now = __atomic_load_n(&ps->now, __ATOMIC_RELAXED);

    if (__atomic_load_n(&ps->fills[index], __ATOMIC_RELAXED) != now)
        __atomic_store_n(&ps->fills[index], now, __ATOMIC_RELAXED);
}

/* Internal to the store's files, not exported from the module. */
#define PS_INTERNAL __attribute__((visibility("hidden")))

/* codec.c */
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
/* A scratch decoding `ps`'s pages (NULL: a codec's own, ps_codec_new) and
 * compressing with `codec` at `level`, not counted in ps->scratches. */
PS_INTERNAL struct ps_scratch *scratch_new(struct page_store *ps, int codec, int level);
PS_INTERNAL void scratch_free(struct ps_scratch *w);
/* Bits of entropy a byte, estimated from a sample of the page, in
 * ENTROPY_ONE units. */
#define ENTROPY_ONE 65536u
PS_INTERNAL uint32_t page_entropy(const void *page);

/* reserve.c: chunks for the allocator (alloc_lock held) */
/* A chunk from the reserve for a write: 0, or -ENOMEM when the reserve
 * stays empty (the wait times out). */
PS_INTERNAL int reserve_take(struct page_store *ps, uint32_t *chunk);
/* Chunk `c`, emptied: kept in the reserve, or its memory given back. */
PS_INTERNAL void reserve_give_back(struct page_store *ps, uint32_t c);
/* [offset, offset + len) of the memfd given back. */
PS_INTERNAL void punch_hole(struct page_store *ps, uint64_t offset, uint64_t len);
/* Chunk `c`, found empty on attach: its memory given back. */
PS_INTERNAL void chunk_unused(struct page_store *ps, uint32_t c);
/* Chunks of the reserve a background move leaves to writes. */
PS_INTERNAL uint32_t reserve_kept_from_moves(const struct page_store *ps);
/* Whether the machine has memory to spare: the reserve is at its small
 * size (see the top of reserve.c). */
PS_INTERNAL bool memory_to_spare(const struct page_store *ps);
/* For a pass by hand that found the reserve at that share: with memory to
 * spare, wait a little for the refill. 0 once the reserve is above it,
 * -EAGAIN otherwise. Takes alloc_lock. */
PS_INTERNAL int reserve_refilled_for_moves(struct page_store *ps);
/* Make chunks below `limit` usable: their bookkeeping touched first, then
 * the limit raised (under alloc_lock), so that serving I/O never faults. */
PS_INTERNAL void raise_chunk_limit(struct page_store *ps, uint64_t limit);
/* Its conditions and arrays (0 or -ENOMEM); then, the allocator ready,
 * the reserve filled and its thread started; stopped, with the store. */
PS_INTERNAL int reserve_init(struct page_store *ps);
PS_INTERNAL int reserve_start(struct page_store *ps);
PS_INTERNAL void reserve_stop(struct page_store *ps);

/* alloc.c (alloc_lock held) */
PS_INTERNAL void list_add(struct page_store *ps, uint32_t c);
PS_INTERNAL uint32_t take_slot(struct page_store *ps, uint32_t c);
PS_INTERNAL void free_slot(struct page_store *ps, uint32_t c, uint32_t slot);
/* A new chunk for class `cls`: 0, -ENOSPC at the memory limit, -ENOMEM. */
PS_INTERNAL int new_chunk(struct page_store *ps, int cls, uint32_t *out);
/* A chunk held whole (the dictionary's), never waiting for the reserve nor
 * taking it below a move's share: 0, -ENOSPC, -EAGAIN. Its class is the
 * page's, every slot taken, on no list: the allocator and compaction
 * leave it alone. */
PS_INTERNAL int new_whole_chunk(struct page_store *ps, uint32_t *out);
PS_INTERNAL void free_whole_chunk(struct page_store *ps, uint32_t c);
PS_INTERNAL bool at_mem_limit(const struct page_store *ps);
/* The allocator rebuilt from the entries a previous I/O worker left (ps_open
 * with attach), and what they hold counted: 0 or -EUCLEAN. */
PS_INTERNAL int rebuild(struct page_store *ps);

/* backing.c: a written-back page read (its stripe lock held), 0 or -EIO;
 * a page the memory limit has no room for written there (its stripe lock
 * held): 0, -ENOSPC when there is no device or no free block, -EIO;
 * a block taken (UINT64_MAX: the device is full) or given back (alloc_lock
 * held); the device let go. */
PS_INTERNAL int read_backed(struct ps_scratch *w, uint64_t e, void *dest);
/* Packed entry `e`'s record, read into w->record with the blocks after it
 * when the reads go in order, or found there: the record, or NULL (-EIO,
 * counted). */
PS_INTERNAL const uint8_t *read_record(struct ps_scratch *w, uint64_t e);
/* What a backed entry `e` of page `index` held, given back once nothing
 * else holds it: its block, or its record's share of its blocks (a
 * frame's record when no page of its group points at it). alloc_lock held. */
PS_INTERNAL void release_backed(struct page_store *ps, uint64_t index, uint64_t e);
/* Packed entry `e`'s record counted on its blocks (`sign` 1), or gone (-1):
 * a block none is on any more is free. alloc_lock held. */
PS_INTERNAL void count_record(struct page_store *ps, uint64_t e, int sign);
PS_INTERNAL int write_backed(struct ps_scratch *w, uint64_t index, const void *page);
PS_INTERNAL uint64_t take_block(struct page_store *ps);
PS_INTERNAL void free_block(struct page_store *ps, uint64_t block);
PS_INTERNAL void backing_free(struct page_store *ps);
/* Page `index` and the next ones, up to `max_pages`, when they are outside
 * RAM on neighbouring blocks (written back, or in the zram tier), read into
 * aligned `dest` with one read (the first group's stripe lock held; the
 * next groups' are tried): the pages read, 0 when that is not the case
 * (fewer than two), or -EIO. */
PS_INTERNAL int read_run_outside_ram(struct ps_scratch *w, uint64_t index, uint32_t max_pages, void *dest);

/* zram_tier.c, the page's stripe lock held: whether a page of `entropy`
 * goes to the zram tier; its write there (0, or -EIO: store it in RAM);
 * its read from there (0 or -EIO); its block discarded, once it has left. */
PS_INTERNAL bool zram_wanted(const struct page_store *ps, uint64_t index, uint32_t entropy);
PS_INTERNAL int write_zram(struct ps_scratch *w, uint64_t index, const void *page);
PS_INTERNAL int read_zram(struct ps_scratch *w, uint64_t index, void *dest);
PS_INTERNAL void leave_zram(struct page_store *ps, uint64_t index);

/* account.c (alloc_lock held): what the store holds, counted: a page of
 * entry `e` (HELD_PAGE), or the payload of frame `e` (HELD_FRAME), added
 * (sign 1) or gone (-1). The one place those counters change. */
enum held { HELD_PAGE, HELD_FRAME };
PS_INTERNAL void account(struct page_store *ps, uint64_t e, enum held what, int sign);

/* publish.c, the page's stripe lock and alloc_lock held */
/* Point page `index` at `entry`, then free what it held before. A frame's
 * entry counts its page here; its payload is counted where the frame is
 * made and freed. */
PS_INTERNAL void publish(struct page_store *ps, uint64_t index, uint64_t entry);
/* Entry `e` of a frame has left page `index`: the frame's slot is freed if
 * no page of the group points at it. */
PS_INTERNAL void frame_release(struct page_store *ps, uint64_t index, uint64_t e);

/* payload.c */
/* A stored entry's payload (`payload`: where it is, or a copy) decoded. */
PS_INTERNAL int decode_payload(struct ps_scratch *w, uint64_t e, const char *payload, void *dest);
/* Page `index` out of the frame of entry `e`, the decoded frame kept in
 * w->frame for the run's next page. */
PS_INTERNAL int load_frame(struct ps_scratch *w, uint64_t index, uint64_t e, void *dest);
/* Page `index` of packed entry `e`, read from the backing device and decoded. */
PS_INTERNAL int load_packed(struct ps_scratch *w, uint64_t index, uint64_t e, void *dest);
/* Copy a payload of `len` bytes (PAGE_SIZE: the page itself) into a free
 * slot and make its entry; for a background move (`background`), never
 * from a larger class's slot nor from the reserve's lower half: -EAGAIN
 * instead. alloc_lock held. */
PS_INTERNAL int put_payload(struct page_store *ps, const void *page, const void *payload, uint32_t len,
                            bool background, uint64_t *entry);

/* dictionary.c */
/* The dictionary an arena's header names, found on attach (before
 * rebuild(), which keeps its chunk): 0, or -EUCLEAN. Freed on close. */
PS_INTERNAL int dict_attach(struct page_store *ps);
PS_INTERNAL void dict_free(struct page_store *ps);
/* Train a dictionary on `n` pages at `samples` and keep it: 0, -EAGAIN
 * when no chunk is to be had without waiting, -EINVAL when the pages teach
 * zstd nothing, -ENOMEM. Not while a dictionary exists. */
PS_INTERNAL int dict_make(struct page_store *ps, const char *samples, uint32_t n);
/* Have w's zstd compress with the store's dictionary, if there is one. */
PS_INTERNAL void dict_load(struct page_store *ps, struct ps_scratch *w);

/* compact.c: the compactor, made and freed with the store; its slice;
 * its bookkeeping's size. */
PS_INTERNAL int compaction_new(struct page_store *ps);
PS_INTERNAL void compaction_free(struct page_store *ps);
PS_INTERNAL uint64_t compaction_bytes(const struct page_store *ps);
/* A pass when one is worth it: while the machine reclaims, after a sweep
 * that moved pages (`swept`), or for a large enough gain. */
PS_INTERNAL void compact_slice(struct page_store *ps, const struct period *p, bool swept);

/* recompress.c: the recompressor, made and freed with the store (quiesced
 * first: passes by hand end); its slice, which says whether a sweep that
 * moved pages ended in it (their old slots left chunks sparse: worth a
 * compaction pass). */
PS_INTERNAL int recompressor_new(struct page_store *ps);
PS_INTERNAL void recompressor_quiesce(struct page_store *ps);
PS_INTERNAL void recompressor_free(struct page_store *ps);
PS_INTERNAL bool recompress_slice(struct page_store *ps, const struct period *p);

/* writeback.c: near the memory limit the coldest pages spilled, else pages
 * idle writeback_after and incompressible ones written back; whether it
 * moved any. */
PS_INTERNAL bool writeback_slice(struct page_store *ps, const struct period *p);

/* background.c: the thread, started last and stopped first. */
PS_INTERNAL int background_start(struct page_store *ps);
PS_INTERNAL void background_stop(struct page_store *ps);
PS_INTERNAL uint64_t background_bytes(void);

#endif
