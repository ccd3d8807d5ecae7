/* The ram store: compressed pages in a memfd arena (native/page_store.c).
 * Each serving thread gets its own codec scratch. */
#include <stdint.h>

#include "page_store.h"
#include "store.h"

static void *ram_thread_new(void *store)
{
    return ps_scratch_new(store);
}

static void ram_thread_free(void *scratch)
{
    ps_scratch_free(scratch);
}

static int ram_read(void *scratch, uint64_t offset, uint32_t len, void *dest)
{
    return ps_read(scratch, offset, len, dest);
}

static int ram_write(void *scratch, uint64_t offset, uint32_t len, const void *src)
{
    return ps_write(scratch, offset, len, src);
}

static int ram_discard(void *scratch, uint64_t offset, uint64_t len)
{
    return ps_discard(scratch, offset, len);
}

const struct store_ops ram_store_ops = {
    .name = "ram",
    .thread_new = ram_thread_new,
    .thread_free = ram_thread_free,
    .read = ram_read,
    .write = ram_write,
    .discard = ram_discard,
};
