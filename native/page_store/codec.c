/*
 * The page store's codecs: compressing one page into a thread's scratch and
 * decompressing a payload back, with LZ4, LZ4HC or zstd; the estimate of a
 * page's entropy that spares incompressible pages the codec; and the
 * scratch itself, allocated up front so that serving allocates nothing.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "internal.h"

bool page_is_filled(const void *page)
{
    const uint64_t *w = page;

    for (size_t i = 1; i < PAGE_SIZE / 8; i++)
        if (w[i] != w[0])
            return false;
    return true;
}

/* LZ4's faster way to start an independent block here: see choose_lz4_entry(). */
static bool lz4_fast_reset;

uint32_t compress_page(struct ps_scratch *w, const void *page, uint32_t cap)
{
    /* A payload of a whole page would read back as a raw one. */
    int limit = (int)(cap < PAGE_SIZE ? cap : PAGE_SIZE - 1);
    size_t n;

    switch (w->codec) {
    case PS_CODEC_LZ4:
        if (!lz4_fast_reset)
            return (uint32_t)LZ4_compress_fast_extState(w->lz4_state, page, w->out, PAGE_SIZE, limit, 1);
        LZ4_resetStream_fast(w->lz4_stream);        /* an independent block, no dictionary */
        return (uint32_t)LZ4_compress_fast_continue(w->lz4_stream, page, w->out, PAGE_SIZE, limit, 1);
    case PS_CODEC_LZ4HC:
        /* The HC state is 256 KiB: reset it the cheap way, never memset it. */
        LZ4_resetStreamHC_fast(w->lz4hc_stream, w->level);
        return (uint32_t)LZ4_compress_HC_continue(w->lz4hc_stream, page, w->out, PAGE_SIZE, limit);
    case PS_CODEC_ZSTD:
        n = ZSTD_compress2(w->zc, w->out, (size_t)limit, page, PAGE_SIZE);
        return ZSTD_isError(n) ? 0 : (uint32_t)n;
    default:
        return 0;
    }
}

unsigned entry_codec_of(int codec)
{
    return codec == PS_CODEC_ZSTD ? ENTRY_ZSTD : ENTRY_LZ4;
}

int decompress_page(struct ps_scratch *w, unsigned codec, const char *payload, uint32_t len, void *dest)
{
    if (codec == ENTRY_ZSTD)
        return ZSTD_decompressDCtx(w->zd, dest, PAGE_SIZE, payload, len) == PAGE_SIZE ? 0 : -EIO;
    return LZ4_decompress_safe(payload, dest, (int)len, PAGE_SIZE) == PAGE_SIZE ? 0 : -EIO;
}

/*
 * Entropy from a sample of the page: 8 bytes in a row every 128 (256 bytes,
 * read as 32 words). How many distinct byte values the sample holds says
 * how many values the page draws from: k values drawn 256 times show
 * k (1 - (1 - 1/k)^256) of them. The estimate is log2 of the k that
 * explains the count (the Hartley entropy, the most a byte can carry),
 * from a table; random bytes show about 162 values, 8 bits. Measured on
 * real files (scripts/bench tiers' corpus), it separates already-compressed
 * pages from the rest as well as the sample's histogram and Shannon's
 * formula do (see policy.py), and it costs much less where our benchmarks
 * run, under emulation, where every memory access is dear: the values seen
 * are bits of four registers, not counts in memory.
 */
#define ENTROPY_RUN     128             /* bytes a sampled word stands for */
#define ENTROPY_SAMPLES (PAGE_SIZE / ENTROPY_RUN * 8)

static uint32_t bits_for_distinct[ENTROPY_SAMPLES + 1];

/* log2 of the k for which k values drawn ENTROPY_SAMPLES times show `seen`
 * distinct ones on average, at most 8 bits. */
static double hartley_bits(unsigned seen)
{
    double lo = 1, hi = 1e6;

    if (seen <= 1)
        return 0;
    for (int i = 0; i < 100; i++) {
        double k = (lo + hi) / 2;
        if (k * (1 - pow(1 - 1 / k, ENTROPY_SAMPLES)) < seen)
            lo = k;
        else
            hi = k;
    }
    return log2(lo) < 8 ? log2(lo) : 8;
}

uint32_t page_entropy(const void *page)
{
    const char *bytes = page;
    uint64_t seen0 = 0, seen1 = 0, seen2 = 0, seen3 = 0;

    for (unsigned at = 0; at < PAGE_SIZE; at += ENTROPY_RUN) {
        uint64_t word;

        memcpy(&word, bytes + at, sizeof(word));
        for (unsigned k = 0; k < 8; k++, word >>= 8) {
            uint64_t bit = 1ull << (word & 63);
            unsigned quarter = (word >> 6) & 3;
            seen0 |= quarter == 0 ? bit : 0;
            seen1 |= quarter == 1 ? bit : 0;
            seen2 |= quarter == 2 ? bit : 0;
            seen3 |= quarter == 3 ? bit : 0;
        }
    }
    return bits_for_distinct[__builtin_popcountll(seen0) + __builtin_popcountll(seen1) +
                             __builtin_popcountll(seen2) + __builtin_popcountll(seen3)];
}

struct ps_scratch *scratch_new(struct page_store *ps, int codec, int level)
{
    struct ps_scratch *w = aligned_alloc(PAGE_SIZE, sizeof(*w));

    if (!w)
        return NULL;
    memset(w, 0, sizeof(*w));
    w->ps = ps;
    w->codec = codec;
    w->level = codec == PS_CODEC_LZ4HC && !level ? LZ4HC_CLEVEL_DEFAULT : level;
    /* Any page may have been recompressed with zstd (recompress.c). */
    if (!(w->zd = ZSTD_createDCtx()))
        goto fail;
    switch (codec) {
    case PS_CODEC_LZ4:
        w->lz4_state = malloc((size_t)LZ4_sizeofState());
        w->lz4_stream = LZ4_createStream();
        if (!w->lz4_state || !w->lz4_stream)
            goto fail;
        break;
    case PS_CODEC_LZ4HC:
        if (!(w->lz4hc_stream = LZ4_createStreamHC()))
            goto fail;
        break;
    case PS_CODEC_ZSTD:
        if (!(w->zc = ZSTD_createCCtx()))
            goto fail;
        /* Frames as small as they go: no size, checksum or dictionary id. */
        ZSTD_CCtx_setParameter(w->zc, ZSTD_c_compressionLevel, w->level);
        ZSTD_CCtx_setParameter(w->zc, ZSTD_c_contentSizeFlag, 0);
        ZSTD_CCtx_setParameter(w->zc, ZSTD_c_checksumFlag, 0);
        ZSTD_CCtx_setParameter(w->zc, ZSTD_c_dictIDFlag, 0);
        break;
    }
    /* Fault the scratch in, and let the codec allocate what it allocates on
     * first use now rather than on a write under memory pressure. */
    memset(w->page, 0, sizeof(w->page));
    memset(w->record, 0, sizeof(w->record));
    memset(w->out, 0, sizeof(w->out));
    uint32_t len = compress_page(w, w->page, PAGE_SIZE);
    if (len && codec != PS_CODEC_NONE)
        decompress_page(w, entry_codec_of(codec), w->out, len, w->page);
    /* Its decoder state is all in one block: fault it in now, not when a
     * recompressed page is first read. */
    populate(w->zd, ZSTD_sizeof_DCtx(w->zd));
    return w;
fail:
    scratch_free(w);
    return NULL;
}

void scratch_free(struct ps_scratch *w)
{
    free(w->lz4_state);
    LZ4_freeStream(w->lz4_stream);
    LZ4_freeStreamHC(w->lz4hc_stream);
    ZSTD_freeCCtx(w->zc);
    ZSTD_freeDCtx(w->zd);
    free(w);
}

static double seconds_now(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/*
 * LZ4 has two ways to compress an independent block. extState clears its
 * 16 KiB table on every call; a stream reset with LZ4_resetStream_fast
 * does not, at the price of some bookkeeping. Natively extState is ~10%
 * faster; where memset is slow (an emulated guest: 200x) the stream is 8x
 * faster. Time both on this machine and keep the faster.
 */
static bool choose_lz4_entry(void)
{
    struct ps_scratch *w = scratch_new(NULL, PS_CODEC_LZ4, 0);
    double took[2] = { 0, 0 };
    char *page = malloc(PAGE_SIZE);
    uint32_t x = 2463534242u;

    if (!w || !page) {
        free(page);
        if (w)
            scratch_free(w);
        return false;
    }
    for (unsigned i = 0; i < PAGE_SIZE; i++) {     /* half varied, half zeros */
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        page[i] = i < PAGE_SIZE / 2 ? (char)(x % 16) : 0;
    }
    for (int round = 0; round < 3; round++) {
        for (int way = 0; way < 2; way++) {
            double start = seconds_now();
            lz4_fast_reset = way;
            for (int i = 0; i < 32; i++)
                compress_page(w, page, PAGE_SIZE);
            if (round)                              /* round 0 warms up */
                took[way] += seconds_now() - start;
        }
    }
    scratch_free(w);
    free(page);
    return took[1] < took[0];
}

static void codec_choices(void)
{
    for (unsigned seen = 0; seen <= ENTROPY_SAMPLES; seen++)
        bits_for_distinct[seen] = (uint32_t)llround(hartley_bits(seen) * ENTROPY_ONE);
    lz4_fast_reset = choose_lz4_entry();
}

void codec_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;

    pthread_once(&once, codec_choices);
}

int ps_zstd_max_level(void) { return ZSTD_maxCLevel(); }

/* -- the codec on its own (trueno_ublk.pagecodec) -------------------------- */

struct ps_scratch *ps_codec_new(int codec, int level)
{
    codec_init();
    return scratch_new(NULL, codec, level);
}

int ps_page_is_filled(const void *page)
{
    return page_is_filled(page);
}

void ps_codec_compress(struct ps_scratch *w, const void *pages, uint64_t n, void *payloads, uint32_t *lens)
{
    char *out = payloads;

    for (uint64_t i = 0; i < n; i++) {
        const char *page = (const char *)pages + i * PAGE_SIZE;

        lens[i] = compress_page(w, page, PAGE_SIZE);
        copy_bytes(out, lens[i] ? w->out : page, lens[i] ? lens[i] : PAGE_SIZE);
        out += lens[i] ? lens[i] : PAGE_SIZE;
    }
}

int ps_codec_decompress(struct ps_scratch *w, const void *payloads, uint64_t size, const uint32_t *lens,
                        uint64_t n, void *pages)
{
    unsigned codec = entry_codec_of(w->codec);
    const char *payload = payloads, *end = payload + size;

    for (uint64_t i = 0; i < n; i++) {
        char *page = (char *)pages + i * PAGE_SIZE;

        if ((uint64_t)(end - payload) < (lens[i] ? lens[i] : PAGE_SIZE))
            return -EIO;
        if (lens[i] == 0)
            copy_bytes(page, payload, PAGE_SIZE);           /* stored as it was */
        else if (lens[i] >= PAGE_SIZE || decompress_page(w, codec, payload, lens[i], page) < 0)
            return -EIO;
        payload += lens[i] ? lens[i] : PAGE_SIZE;
    }
    return payload == end ? 0 : -EIO;
}
