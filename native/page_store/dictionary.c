/*
 * The zstd dictionary cold pages are compressed with, trained on the
 * device's own cold pages.
 *
 * A page alone, or a run of two or three, gives zstd little to find
 * repeats in; a dictionary of what the device's pages have in common
 * (headers of objects, strings, code) gives it more. Measured natively
 * with the policy's defaults, a pass by hand over 192 MiB of the anonymous
 * memory of real programs (`scripts/bench tiers --data programs`' corpus)
 * takes their payloads from 73.5 to 58.6 MiB with a 60 KiB dictionary
 * trained on 1,024 of the pages; over real files, from 109.8 to 106.0
 * (their third already compressed is left as it is). Part of it is frames
 * of pages LZ4 left raw, which fit a slot only with the dictionary. Trained
 * on 256 pages it does nearly as well; on 4,096, no better. Kernel zram
 * takes a dictionary from its user (algorithm_params dict=); ours is
 * trained by the store itself, once, on a sample of the pages the policy
 * recompresses first (recompress.c), and kept for the arena's life.
 *
 * It lies in a chunk of its own, held whole (new_whole_chunk()): length,
 * then the dictionary. The arena's header names the chunk (dict_chunk),
 * set once the chunk is written and before any payload uses it, so a
 * worker killed at any instant leaves either no dictionary (its chunk
 * found unused on attach) or a whole one, which the next worker decodes
 * with in place (the decoder's tables refer to the chunk, not a copy).
 * Its chunk, 64 KiB, counts in mem_used (zram's pool leaves out the
 * dictionary its user gives it).
 */
#define _GNU_SOURCE
#define ZDICT_STATIC_LINKING_ONLY       /* fastCover with set parameters */
#define ZSTD_STATIC_LINKING_ONLY        /* dictionaries used in place, not copied */
#include <errno.h>
#include <zdict.h>

#include "internal.h"

#define DICT_BYTES (CHUNK_SIZE - 4096u)   /* 60 KiB: measured (see the top) */

/* The length, then the dictionary, at the start of chunk `c`. */
static void dict_set(struct page_store *ps, uint32_t c, const char *chunk, uint32_t len)
{
    ps->dict_chunk = c;
    ps->dict = chunk + sizeof(uint32_t);
    ps->dict_len = len;
}

int dict_attach(struct page_store *ps)
{
    uint32_t field = ((struct arena_header *)ps->base)->dict_chunk, len;
    const char *chunk;

    if (!field)
        return 0;
    if (field - 1ull >= ps->max_chunks)
        return -EUCLEAN;
    chunk = ps->chunks + (field - 1ull) * CHUNK_SIZE;
    memcpy(&len, chunk, sizeof(len));
    if (!len || len > DICT_BYTES)
        return -EUCLEAN;
    dict_set(ps, field - 1, chunk, len);
    if (!(ps->ddict = ZSTD_createDDict_byReference(ps->dict, len)))
        return -EUCLEAN;
    populate(ps->ddict, ZSTD_sizeof_DDict(ps->ddict));
    return 0;
}

void dict_free(struct page_store *ps)
{
    ZSTD_freeDDict(ps->ddict);
    ps->ddict = NULL;
}

int dict_make(struct page_store *ps, const char *samples, uint32_t n)
{
    size_t *sizes = malloc(n * sizeof(*sizes));
    char *trained = malloc(DICT_BYTES);
    ZDICT_fastCover_params_t params = {
        /* Segments of 200 bytes, matched on 8: natively, as good as
         * zstd's search over k and d, in a sixth of the time. */
        .k = 200, .d = 8, .f = 18, .accel = 1, .splitPoint = 1.0,
        .zParams.compressionLevel = 6,
    };
    ZSTD_DDict *ddict = NULL;
    size_t len = 0;
    uint32_t c;
    char *chunk;
    int ret = -ENOMEM;

    if (!sizes || !trained)
        goto out;
    for (uint32_t i = 0; i < n; i++)
        sizes[i] = PAGE_SIZE;
    len = ZDICT_trainFromBuffer_fastCover(trained, DICT_BYTES, samples, sizes, n, params);
    ret = -EINVAL;
    if (ZDICT_isError(len))
        goto out;

    pthread_mutex_lock(&ps->alloc_lock);
    ret = new_whole_chunk(ps, &c);
    pthread_mutex_unlock(&ps->alloc_lock);
    if (ret < 0)
        goto out;
    /* The chunk came from the reserve: faulted in, so the copy waits for
     * nothing, and no reader knows of it yet. */
    chunk = ps->chunks + (uint64_t)c * CHUNK_SIZE;
    memcpy(chunk, &(uint32_t){ (uint32_t)len }, sizeof(uint32_t));
    copy_bytes(chunk + sizeof(uint32_t), trained, len);
    if (!(ddict = ZSTD_createDDict_byReference(chunk + sizeof(uint32_t), len))) {
        pthread_mutex_lock(&ps->alloc_lock);
        free_whole_chunk(ps, c);
        pthread_mutex_unlock(&ps->alloc_lock);
        ret = -ENOMEM;
        goto out;
    }
    populate(ddict, ZSTD_sizeof_DDict(ddict));
    pthread_mutex_lock(&ps->alloc_lock);
    ps->ddict = ddict;
    dict_set(ps, c, chunk, (uint32_t)len);
    __atomic_store_n(&((struct arena_header *)ps->base)->dict_chunk, c + 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&ps->alloc_lock);
    ret = 0;
out:
    free(trained);
    free(sizes);
    return ret;
}

void dict_load(struct page_store *ps, struct ps_scratch *w)
{
    if (!w->dict && ps->dict && w->zc)
        w->dict = !ZSTD_isError(ZSTD_CCtx_loadDictionary_byReference(w->zc, ps->dict, ps->dict_len));
}
