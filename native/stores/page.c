/* The page store: compressed pages in a memfd arena (native/page_store/).
 * Each serving thread gets its own codec scratch. */
#include <stdbool.h>
#include <stdint.h>

#include "page_store/page_store.h"
#include "server/store.h"

static void *page_thread_new(void *store)
{
    return ps_scratch_new(store);
}

static void page_thread_free(void *scratch)
{
    ps_scratch_free(scratch);
}

static int page_read(void *scratch, uint64_t offset, uint32_t len, void *dest)
{
    return ps_read(scratch, offset, len, dest);
}

static int page_write(void *scratch, uint64_t offset, uint32_t len, const void *src, bool swap)
{
    if (swap)
        ps_serving_swap(scratch);
    return ps_write(scratch, offset, len, src);
}

static int page_discard(void *scratch, uint64_t offset, uint64_t len)
{
    return ps_discard(scratch, offset, len);
}

const struct store_ops page_store_ops = {
    .name = "page",
    .thread_new = page_thread_new,
    .thread_free = page_thread_free,
    .read = page_read,
    .write = page_write,
    .discard = page_discard,
};
