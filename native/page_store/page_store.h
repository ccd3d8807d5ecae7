/*
 * The compressed page store's per-page mechanics, also parsed by cffi.
 *
 * Everything the store holds lives in one memfd (layout in arena.c), so
 * that memory is counted and returned precisely and so that a restarted
 * I/O worker can attach to the same memory and find every page again.
 * Policy -- which codec, the huge threshold, the memory limit, when to
 * compact -- is chosen by the Python side and passed in.
 */
#ifndef TRUENO_PAGE_STORE_H
#define TRUENO_PAGE_STORE_H

#include <stdint.h>

#define PS_CODEC_NONE  0
#define PS_CODEC_LZ4   1
#define PS_CODEC_LZ4HC 2
#define PS_CODEC_ZSTD  3

#define PS_PAGE_SIZE   4096            /* the device's page: the unit stored */
#define PS_CHUNK_SIZE  65536           /* the arena's unit of allocation */
#define PS_MAX_PAGES   17179869184     /* 2^34: 64 TiB, so that chunk numbers fit 32 bits */
#define PS_ENTROPY_BUCKETS 8

/* Which pages ps_recompress takes. */
#define PS_RECOMPRESS_IDLE 0           /* marked idle (ps_mark_idle) */
#define PS_RECOMPRESS_HUGE 1           /* stored raw */
#define PS_RECOMPRESS_ALL  2

/* Which pages ps_writeback takes. */
#define PS_WRITEBACK_IDLE  0           /* marked idle, or not used for age_seconds */
#define PS_WRITEBACK_HUGE  1           /* stored raw */
#define PS_WRITEBACK_INCOMPRESSIBLE 2  /* stored raw and never worth another try */
#define PS_WRITEBACK_ALL   3
/* Pages a writeback gathers, then writes, neighbouring blocks in one write
 * (scripts/bench writeback measures the size). */
#define PS_WRITEBACK_BATCH 128

struct page_store;
/* Per-thread scratch: codec state and a page buffer, allocated up front so
 * that serving I/O allocates nothing. */
struct ps_scratch;

struct ps_stats {
    uint64_t pages_stored;              /* map entries in use, same-filled included */
    uint64_t same_pages;
    uint64_t huge_pages;
    uint64_t compr_data_size;
    uint64_t pages_compacted;
    uint64_t notify_free;
    uint64_t reserve_misses;            /* writes that found the reserve empty */
    uint64_t live_chunks;
    uint64_t peak_live_chunks;
    uint64_t reserve_chunks;            /* faulted in ahead of writes (swap safety) */
    uint64_t pool_bytes;                /* chunks in use and the reserve: what zram counts of its
                                           own (its zsmalloc pool) */
    uint64_t map_bytes;                 /* beside the pool, as zram's table is: the page map (entries,
                                           fill words), the arena's header, the allocator's bookkeeping */
    uint64_t mem_limit;
    /* The cold-page policy's (recompress.c) */
    uint64_t recompressed_pages;        /* held in a recompression codec now */
    uint64_t recompressed_bytes;        /* ... their payloads */
    uint64_t frames;                    /* of those, frames of several pages held now */
    uint64_t frame_pages;               /* ... the pages in them */
    uint64_t frame_bytes;               /* ... their payloads */
    uint64_t dict_bytes;                /* the zstd dictionary cold pages are compressed with; 0: none yet */
    uint64_t recompressions;            /* pages recompressed, ever */
    uint64_t recompress_saved;          /* bytes those saved when they were made */
    uint64_t idle_pages;                /* stored pages idle (marked, or cold) at the last sweep */
    uint64_t serving_swap;              /* 1 once swap writes to the store (ps_serving_swap) */
    uint64_t entropy_raw;               /* pages stored raw on their entropy alone, ever */
    uint64_t entropy_pages[PS_ENTROPY_BUCKETS];  /* pages written, by whole bits of entropy a byte */
    uint64_t background_ns;             /* CPU time of the background thread's moves */
    uint64_t background_paused;         /* its periods left out for the device's I/O */
    /* The backing device's (backing.c, writeback.c), zram's bd_stat in 4 KiB pages */
    uint64_t bd_blocks;                 /* its size */
    uint64_t bd_count;                  /* pages on it now */
    uint64_t bd_used_blocks;            /* its blocks in use: a raw page's, packed payloads' */
    uint64_t bd_reads;                  /* pages read from it, ever */
    uint64_t bd_writes;                 /* pages written to it, ever */
    uint64_t bd_read_errors;            /* reads it failed: that page's read failed */
    uint64_t bd_write_errors;           /* writes it failed: their pages stayed in RAM */
    /* The kernel zram tier's (zram_tier.c), in 4 KiB pages */
    uint64_t zram_pages;                /* pages in it now */
    uint64_t zram_reads;                /* read from it, ever */
    uint64_t zram_writes;               /* written to it, ever */
    uint64_t zram_read_errors;          /* reads it failed: that page's read failed */
    uint64_t zram_write_errors;         /* writes it failed: those pages went to RAM */
    uint64_t zram_discard_errors;       /* discards it failed: zram held a stale copy */
};

/* The memfd length ps_open needs for a device of `pages` 4 KiB pages. */
uint64_t ps_arena_length(uint64_t pages);
/*
 * Open the store over `memfd`. attach == 0 formats it for `pages` (the
 * caller has sized it with ps_arena_length); attach == 1 checks the header
 * and rebuilds the allocator from the page map a previous I/O worker left,
 * at the size the arena holds (a resize may have changed it), which must
 * be at least `pages`. *err is -errno on failure (-EUCLEAN: the memfd does
 * not hold a consistent arena of that size; -EMEDIUMTYPE: its pages are in
 * another codec than `codec`).
 */
struct page_store *ps_open(int memfd, uint64_t pages, int codec, int level,
                           uint32_t huge_threshold, int attach, int *err);
/* What ps_open with attach checks first, without mapping anything: 0, or
 * the -errno it would fail with. */
int ps_arena_check(int memfd, uint64_t pages, int codec);
void ps_close(struct page_store *ps);
struct ps_scratch *ps_scratch_new(struct page_store *ps);
void ps_scratch_free(struct ps_scratch *w);

/* Byte offsets and lengths on the 512-byte grid. 0, or -ENOSPC when the
 * memory limit refuses the write, -ENOMEM when the arena is full, -EIO when
 * a stored payload does not decode. */
int ps_read(struct ps_scratch *w, uint64_t offset, uint32_t len, void *dest);
int ps_write(struct ps_scratch *w, uint64_t offset, uint32_t len, const void *src);
int ps_discard(struct ps_scratch *w, uint64_t offset, uint64_t len);
/* The kernel's swap writes to this store: a write came flagged
 * UBLK_IO_F_SWAP. From then on the cold-page policy treats its pages as
 * swap's (recompress.c). */
void ps_serving_swap(struct ps_scratch *w);

/* The device's size in pages: as opened (attach: as the arena says), or
 * as last resized. */
uint64_t ps_pages(struct page_store *ps);
/* Pages stored at index `first` and beyond. */
uint64_t ps_pages_stored_from(struct page_store *ps, uint64_t first);
/* Serve `pages` pages from now on: 0, -EFBIG beyond the size the arena has
 * room for (16 times the size it was made with, up to 4 TiB), -EBUSY when
 * shrinking would drop stored pages. Grow before the kernel learns the new
 * size; shrink after it has. One caller at a time. */
int ps_resize(struct page_store *ps, uint64_t pages);
uint64_t ps_max_pages(struct page_store *ps);

void ps_set_mem_limit(struct page_store *ps, uint64_t bytes);
void ps_get_stats(struct page_store *ps, struct ps_stats *out);
void ps_reset_peak(struct page_store *ps);
/* Move payloads out of sparse chunks; returns the 4 KiB pages given back. */
uint64_t ps_compact(struct page_store *ps);

/*
 * The cold-page policy (recompress.c). Pages idle `after_seconds` or
 * longer are recompressed with `codec` at `level` by the background thread
 * (after_seconds 0: never). 0 or -ENOMEM.
 */
int ps_set_recompression(struct page_store *ps, int codec, int level, uint32_t after_seconds);
/* Pages whose sampled entropy is `bits` a byte or more are stored raw
 * without trying the codec (0: never). */
void ps_set_entropy_threshold(struct page_store *ps, double bits);
/* Mark idle every stored page not read or written for `age_seconds` (0:
 * every stored page), as zram's idle attribute does; returns how many were
 * not marked already. */
uint64_t ps_mark_idle(struct page_store *ps, uint32_t age_seconds);
/* Recompress up to `max_pages` pages of `type` (PS_RECOMPRESS_*) now, with
 * `codec` at `level`: *done pages moved, *saved bytes saved. 0, -EINVAL
 * for a codec that cannot recompress, -ENOMEM. */
int ps_recompress(struct page_store *ps, int type, int codec, int level, uint64_t max_pages,
                  uint64_t *done, uint64_t *saved);
int ps_zstd_max_level(void);

/*
 * The backing device (backing.c, writeback.c). ps_set_backing: `fd` (opened
 * O_DIRECT) of `blocks` pages holds written-back pages from now on; the
 * pages the map says are on it (a previous worker's) are counted. 0,
 * -EBUSY when one is set already, -EUCLEAN when the map names blocks the
 * device cannot hold. The store does not close `fd`.
 */
int ps_set_backing(struct page_store *ps, int fd, uint64_t blocks);
/* Write up to `max_pages` pages of `type` (PS_WRITEBACK_*) to the backing
 * device and free their memory: *done pages moved. 0; -EIO when the device
 * failed a write (those pages stayed in RAM); -ENODEV without a device. A
 * full device, or the limit spent, ends it early with 0. */
int ps_writeback(struct page_store *ps, int type, uint32_t age_seconds, uint64_t max_pages, uint64_t *done);
/* zram's writeback_limit: with `enabled`, writebacks stop once `pages`
 * more have been written. */
void ps_set_writeback_limit(struct page_store *ps, int enabled, uint64_t pages);
/* The background writes back pages idle `after_seconds` (0: none) and
 * incompressible ones; near the memory limit (7/8 of it) it spills the
 * coldest pages whatever this says, and a write at the limit waits for it. */
void ps_set_writeback_after(struct page_store *ps, uint32_t after_seconds);

/*
 * Kernel zram as a tier (zram_tier.c): from now on, pages with less than
 * `below_bits` bits of entropy a byte (8: every page) are written to the
 * zram device `fd` (opened O_DIRECT, `pages` pages) at their own offset,
 * not stored in RAM; same-filled pages stay in the map. The pages the map
 * says are there (a previous worker's) are counted. 0, -EBUSY when one is
 * set already, -EINVAL for `below_bits` outside (0, 8], -EUCLEAN when the
 * map has pages there beyond `pages`. The store does not close `fd`.
 */
int ps_set_zram(struct page_store *ps, int fd, uint64_t pages, double below_bits);

/*
 * The page codec on its own (trueno_ublk.pagecodec): a context per thread,
 * as the store's I/O threads have. Pages lie PS_PAGE_SIZE apart, payloads
 * end to end (room for n pages); a payload's length 0 means the page did
 * not compress below a page, and its payload is the page itself.
 */
struct ps_scratch *ps_codec_new(int codec, int level);     /* freed by ps_scratch_free */
int ps_page_is_filled(const void *page);
void ps_codec_compress(struct ps_scratch *w, const void *pages, uint64_t n, void *payloads, uint32_t *lens);
/* 0, or -EIO: a payload does not decode to a page, or the lengths do not
 * add up to `size`, the payloads' bytes. */
int ps_codec_decompress(struct ps_scratch *w, const void *payloads, uint64_t size, const uint32_t *lens,
                        uint64_t n, void *pages);

#endif
