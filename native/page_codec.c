/*
 * The page store's codecs: compressing one page into a serving thread's
 * scratch and decompressing a payload back, with LZ4, LZ4HC or zstd, and
 * the scratch itself, allocated up front so that serving allocates nothing.
 */
#define _GNU_SOURCE
#include <errno.h>
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

/* The payload length in w->out, or 0 for "store raw": the page does not
 * compress below the huge threshold. */
uint32_t compress_page(struct ps_scratch *w, const void *page)
{
    struct page_store *ps = w->ps;
    /* A payload of a whole page would read back as a raw one. */
    int cap = (int)(ps->huge_threshold < PAGE_SIZE ? ps->huge_threshold : PAGE_SIZE - 1);
    size_t n;

    switch (ps->codec) {
    case PS_CODEC_LZ4:
        if (!ps->lz4_fast_reset)
            return (uint32_t)LZ4_compress_fast_extState(w->lz4_state, page, w->out, PAGE_SIZE, cap, 1);
        LZ4_resetStream_fast(w->lz4_stream);        /* an independent block, no dictionary */
        return (uint32_t)LZ4_compress_fast_continue(w->lz4_stream, page, w->out, PAGE_SIZE, cap, 1);
    case PS_CODEC_LZ4HC:
        /* The HC state is 256 KiB: reset it the cheap way, never memset it. */
        LZ4_resetStreamHC_fast(w->lz4hc_stream, LZ4HC_CLEVEL_DEFAULT);
        return (uint32_t)LZ4_compress_HC_continue(w->lz4hc_stream, page, w->out, PAGE_SIZE, cap);
    case PS_CODEC_ZSTD:
        n = ZSTD_compress2(w->zc, w->out, (size_t)cap, page, PAGE_SIZE);
        return ZSTD_isError(n) ? 0 : (uint32_t)n;
    default:
        return 0;
    }
}

int decompress_page(struct ps_scratch *w, const char *payload, uint32_t len, void *dest)
{
    size_t n;

    switch (w->ps->codec) {
    case PS_CODEC_LZ4:
    case PS_CODEC_LZ4HC:
        return LZ4_decompress_safe(payload, dest, (int)len, PAGE_SIZE) == PAGE_SIZE ? 0 : -EIO;
    case PS_CODEC_ZSTD:
        n = ZSTD_decompressDCtx(w->zd, dest, PAGE_SIZE, payload, len);
        return n == PAGE_SIZE ? 0 : -EIO;
    default:
        return -EIO;
    }
}

struct ps_scratch *ps_scratch_new(struct page_store *ps)
{
    struct ps_scratch *w = calloc(1, sizeof(*w));

    if (!w)
        return NULL;
    w->ps = ps;
    switch (ps->codec) {
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
        w->zc = ZSTD_createCCtx();
        w->zd = ZSTD_createDCtx();
        if (!w->zc || !w->zd)
            goto fail;
        /* Frames as small as they go: no size, checksum or dictionary id. */
        ZSTD_CCtx_setParameter(w->zc, ZSTD_c_compressionLevel, ps->level);
        ZSTD_CCtx_setParameter(w->zc, ZSTD_c_contentSizeFlag, 0);
        ZSTD_CCtx_setParameter(w->zc, ZSTD_c_checksumFlag, 0);
        ZSTD_CCtx_setParameter(w->zc, ZSTD_c_dictIDFlag, 0);
        break;
    }
    /* Fault the scratch in, and let the codec allocate what it allocates on
     * first use now rather than on a write under memory pressure. */
    memset(w->page, 0, sizeof(w->page));
    memset(w->out, 0, sizeof(w->out));
    uint32_t len = compress_page(w, w->page);
    if (len)
        decompress_page(w, w->out, len, w->page);
    return w;
fail:
    ps_scratch_free(w);
    return NULL;
}

void ps_scratch_free(struct ps_scratch *w)
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
bool choose_lz4_entry(struct page_store *ps)
{
    struct ps_scratch *w = ps_scratch_new(ps);
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
                compress_page(w, page);
            if (round)                              /* round 0 warms up */
                took[way] += seconds_now() - start;
        }
    }
    ps_scratch_free(w);
    free(page);
    return took[1] < took[0];
}

int ps_zstd_max_level(void) { return ZSTD_maxCLevel(); }
