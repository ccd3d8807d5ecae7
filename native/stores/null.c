/* The null store keeps nothing: reads return whatever the tag buffer holds,
 * writes and discards succeed at once. It measures the ublk transport
 * alone. */
#include <stdbool.h>
#include <stdint.h>

#include "server/store.h"

static int null_read(void *ctx, uint64_t offset, uint32_t len, void *dest)
{
    (void)ctx, (void)offset, (void)len, (void)dest;
    return 0;
}

static int null_write(void *ctx, uint64_t offset, uint32_t len, const void *src, bool swap)
{
    (void)ctx, (void)offset, (void)len, (void)src, (void)swap;
    return 0;
}

static int null_discard(void *ctx, uint64_t offset, uint64_t len)
{
    (void)ctx, (void)offset, (void)len;
    return 0;
}

const struct store_ops null_store_ops = {
    .name = "null",
    .read = null_read,
    .write = null_write,
    .discard = null_discard,
};
