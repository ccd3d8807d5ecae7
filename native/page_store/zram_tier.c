/*
 * Kernel zram as a tier of the store (create --backend zram|tiered): pages
 * the entropy routing sends there are written to a kernel zram device at
 * their own offset, with direct I/O, and the kernel compresses and holds
 * them. Low-entropy pages are what it takes by default (kernel lz4 is cheap
 * on them); with `below` at the top of the scale every page goes.
 *
 * A page in zram keeps its place in the page map as a written-back page
 * does (ENTRY_BACKED), marked ENTRY_ZRAM: its block is its own index, so
 * zram needs no free map, and a recovered worker only checks that the
 * device is still large enough. When the page leaves zram (rewritten into
 * the store, same-filled, discarded) its block is discarded, which frees
 * zram's copy; a rewrite that goes to zram again simply overwrites it.
 *
 * Both run on the I/O path, holding the page's stripe lock but not
 * alloc_lock: zram serves them in the caller's context, allocating with
 * GFP_NOIO (the I/O threads are IO_FLUSHERs), as when the kernel swaps to
 * zram itself. A write zram fails (full, or at its own mem_limit) is
 * stored in RAM instead: no page is refused for the tier's sake.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "internal.h"

int ps_set_zram(struct page_store *ps, int fd, uint64_t pages, double below_bits)
{
    int ret = 0;

    if (ps->zram_fd >= 0)
        return -EBUSY;
    if (below_bits <= 0 || below_bits > 8)
        return -EINVAL;
    pthread_mutex_lock(&ps->alloc_lock);
    /* The pages a previous worker left there are counted (rebuild()): a
     * smaller device than the one written to cannot hold them. */
    for (uint64_t i = pages; i < ps->pages && !ret; i++)
        if (entry_in_zram(ps->entries[i]))
            ret = -EUCLEAN;
    if (!ret) {
        ps->zram_blocks = pages;
        ps->zram_below = below_bits >= 8 ? UINT32_MAX : (uint32_t)(below_bits * ENTROPY_ONE);
        ps->zram_fd = fd;
    }
    pthread_mutex_unlock(&ps->alloc_lock);
    return ret;
}

bool zram_wanted(const struct page_store *ps, uint64_t index, uint32_t entropy)
{
    return ps->zram_fd >= 0 && index < ps->zram_blocks && entropy < ps->zram_below;
}

int write_zram(struct ps_scratch *w, uint64_t index, const void *page)
{
    struct page_store *ps = w->ps;
    const void *aligned = page;

    /* O_DIRECT wants an aligned buffer: the request's pages usually are. */
    if ((uintptr_t)page % PAGE_SIZE) {
        copy_bytes(w->page, page, PAGE_SIZE);
        aligned = w->page;
    }
    if (pwrite(ps->zram_fd, aligned, PAGE_SIZE, (off_t)(index * PAGE_SIZE)) != PAGE_SIZE) {
        __atomic_fetch_add(&ps->st.zram_write_errors, 1, __ATOMIC_RELAXED);
        return -EIO;
    }
    __atomic_fetch_add(&ps->st.zram_writes, 1, __ATOMIC_RELAXED);
    return 0;
}

int read_zram(struct ps_scratch *w, uint64_t index, void *dest)
{
    struct page_store *ps = w->ps;
    char *into = (uintptr_t)dest % PAGE_SIZE ? w->page : dest;     /* aligned, for O_DIRECT */

    if (ps->zram_fd < 0 || pread(ps->zram_fd, into, PAGE_SIZE, (off_t)(index * PAGE_SIZE)) != PAGE_SIZE) {
        __atomic_fetch_add(&ps->st.zram_read_errors, 1, __ATOMIC_RELAXED);
        return -EIO;
    }
    __atomic_fetch_add(&ps->st.zram_reads, 1, __ATOMIC_RELAXED);
    if (into != dest)
        copy_bytes(dest, into, PAGE_SIZE);
    return 0;
}

void leave_zram(struct page_store *ps, uint64_t index)
{
    uint64_t range[2] = { index * PAGE_SIZE, PAGE_SIZE };

    /* Its data is stale either way; a failed discard only leaves zram's
     * copy held until the block is written again. */
    if (ps->zram_fd >= 0 && ioctl(ps->zram_fd, BLKDISCARD, range) < 0)
        __atomic_fetch_add(&ps->st.zram_discard_errors, 1, __ATOMIC_RELAXED);
}
