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

#include "page_store_impl.h"

bool page_is_filled(const void *page)
{
    const uint64_t *w = page;

    for (size_t i = 1; i < PAGE_SIZE / 8; i++)
        if (w[i] != w[0])
            return false;
    return true;
}

uint32_t compress_page(struct ps_scratch *w, const void *page, uint32_t cap)
{
    /* A payload of a whole page would read back as a raw one. */
    int limit = (int)(cap < PAGE_SIZE ? cap : PAGE_SIZE - 1);
    size_t n;

    switch (w->codec) {
    case PS_CODEC_LZ4:
        if (!w->ps->lz4_fast_reset)
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
 * read as 32 words), their histogram and a table of c * log2(c). Measured
 * on real files (scripts/bench tiers' corpus), this sample separates
 * already-compressed pages from the rest as well as every sixteenth byte
 * does, and nearly as well as the whole page (see policy.py). Cheap under
 * emulation too, where our benchmarks run and every memory access is dear:
 * word loads, integers only, and the sum and the clearing visit only the
 * byte values the sample holds (w->seen), not all 256.
 */
#define ENTROPY_RUN     128             /* bytes a sampled word stands for */
#define ENTROPY_SAMPLES (PAGE_SIZE / ENTROPY_RUN * 8)
#define LOG2_SAMPLES    8

static uint32_t c_log2_c[ENTROPY_SAMPLES + 1];
static pthread_once_t entropy_table_once = PTHREAD_ONCE_INIT;

static void fill_entropy_table(void)
{
    for (unsigned c = 1; c <= ENTROPY_SAMPLES; c++)
        c_log2_c[c] = (uint32_t)llround(c * log2(c) * ENTROPY_ONE);
}

void entropy_init(void)
{
    pthread_once(&entropy_table_once, fill_entropy_table);
}

uint32_t page_entropy(struct ps_scratch *w, const void *page)
{
    const char *bytes = page;
    uint64_t sum = 0;
    unsigned n = 0;

    for (unsigned at = 0; at < PAGE_SIZE; at += ENTROPY_RUN) {
        uint64_t word;

        memcpy(&word, bytes + at, sizeof(word));
        for (unsigned k = 0; k < 8; k++, word >>= 8) {
            uint8_t b = (uint8_t)word;
            w->seen[n] = b;                     /* kept only if new: no branch to mispredict */
            n += w->counts[b]++ == 0;
        }
    }
    for (unsigned k = 0; k < n; k++) {     /* leaves counts zeroed for the next page */
        sum += c_log2_c[w->counts[w->seen[k]]];
        w->counts[w->seen[k]] = 0;
    }
    return (uint32_t)(LOG2_SAMPLES * ENTROPY_ONE - sum / ENTROPY_SAMPLES);
}

struct ps_scratch *scratch_new(struct page_store *ps, int codec, int level)
{
    struct ps_scratch *w = calloc(1, sizeof(*w));

    if (!w)
        return NULL;
    w->ps = ps;
    w->codec = codec;
    w->level = codec == PS_CODEC_LZ4HC && !level ? LZ4HC_CLEVEL_DEFAULT : level;
    /* Any page may have been recompressed with zstd (page_recompress.c). */
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
    memset(w->out, 0, sizeof(w->out));
    uint32_t len = compress_page(w, w->page, PAGE_SIZE);
    if (len && codec != PS_CODEC_NONE)
        decompress_page(w, entry_codec_of(codec), w->out, len, w->page);
    /* Its decoder state is all in one block: fault it in now, not when a
     * recompressed page is first read. */
    populate(w->zd, ZSTD_sizeof_DCtx(w->zd));
    return w;
fail:
    ps_scratch_free(w);
    return NULL;
}

struct ps_scratch *ps_scratch_new(struct page_store *ps)
{
    struct ps_scratch *w = scratch_new(ps, ps->codec, ps->level);

    if (w) {
        pthread_mutex_lock(&ps->alloc_lock);
        w->next = ps->scratches;
        ps->scratches = w;
        pthread_mutex_unlock(&ps->alloc_lock);
    }
    return w;
}

void ps_scratch_free(struct ps_scratch *w)
{
    struct page_store *ps = w->ps;

    pthread_mutex_lock(&ps->alloc_lock);
    for (struct ps_scratch **p = &ps->scratches; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            break;
        }
    pthread_mutex_unlock(&ps->alloc_lock);
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
bool choose_lz4_entry(struct page_store *ps)
{
    struct ps_scratch *w = scratch_new(ps, PS_CODEC_LZ4, 0);
    double took[2] = { 0, 0 };
    char *page = malloc(PAGE_SIZE);
    uint32_t x = 2463534242u;

    if (!w || !page) {
        free(page);
        if (w)
            ps_scratch_free(w);
        return false;
    }
    for (unsigned i = 0; i < PAGE_SIZE; i++) {     /* half varied, half zeros */
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        page[i] = i < PAGE_SIZE / 2 ? (char)(x % 16) : 0;
    }
    for (int round = 0; round < 3; round++) {
        for (int way = 0; way < 2; way++) {
            double start = seconds_now();
            ps->lz4_fast_reset = way;
            for (int i = 0; i < 32; i++)
                compress_page(w, page, PAGE_SIZE);
            if (round)                              /* round 0 warms up */
                took[way] += seconds_now() - start;
        }
    }
    ps_scratch_free(w);
    free(page);
    return took[1] < took[0];
}

int ps_zstd_max_level(void) { return ZSTD_maxCLevel(); }
