/*
 * Memory helpers of the page store, below everything else in it: copies
 * and fills, faulting memory in ahead of use, and arrays of address space
 * reserved whole and touched as they grow.
 */
#ifndef TRUENO_MEMORY_H
#define TRUENO_MEMORY_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "page_store.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/*
 * Page-sized copies and fills with the string instructions, as the kernel
 * does: fast on x86-64 since ERMS (2012). They matter under emulation too:
 * QEMU's TCG runs `rep movsb` as one helper, while glibc's AVX2 memcpy and
 * memset are emulated instruction by instruction (measured in the guest: a
 * 16 KiB memset costs 34 us there, 0.17 us natively).
 */
static inline void copy_bytes(void *dst, const void *src, size_t n)
{
#if defined(__x86_64__)
    __asm__ volatile("rep movsb" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
#else
    memcpy(dst, src, n);
#endif
}

static inline void fill_words(void *dst, uint64_t word, size_t n_words)
{
#if defined(__x86_64__)
    __asm__ volatile("rep stosq" : "+D"(dst), "+c"(n_words) : "a"(word) : "memory");
#else
    uint64_t *w = dst;
    for (size_t i = 0; i < n_words; i++)
        w[i] = word;
#endif
}

/* Fault in [addr, addr + len) for writing, so that no later access faults. */
static inline void populate(void *addr, uint64_t len)
{
    uintptr_t start = (uintptr_t)addr / PS_PAGE_SIZE * PS_PAGE_SIZE;

    if (len == 0)
        return;
    len += (uintptr_t)addr - start;
    if (madvise((void *)start, len, MADV_POPULATE_WRITE) == 0)
        return;
    for (uint64_t off = 0; off < len; off += PS_PAGE_SIZE)     /* before Linux 5.14 */
        __atomic_fetch_or((volatile char *)start + off, 0, __ATOMIC_RELAXED);
}

/* `count` zeroed entries of `size` bytes, faulted in now; NULL on
 * failure. For what a thread touches while it holds a lock the I/O path
 * waits for: a fault there waits for reclaim -- under swap, for writes to
 * this store, which wait behind that lock. calloc() alone leaves fresh
 * memory untouched (seen in a guest: the writeback's first decode into its
 * batch, under a page's stripe lock, stalled for good). */
static inline void *resident_calloc(size_t count, size_t size)
{
    void *p = calloc(count, size);

    if (p)
        populate(p, count * size);
    return p;
}

/* An array of `count` entries of `entry_size` bytes: address space reserved
 * at once, memory touched only as far as it is used (touch_array), so that
 * one entry per chunk the layout has room for costs only what the device's
 * size needs. NULL on failure. */
static inline void *reserve_array(uint64_t count, size_t entry_size)
{
    void *array = mmap(NULL, count * entry_size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

    return array == MAP_FAILED ? NULL : array;
}

static inline void release_array(void *array, uint64_t count, size_t entry_size)
{
    if (array)
        munmap(array, count * entry_size);
}

static inline void touch_array(void *array, size_t entry_size, uint64_t from, uint64_t to)
{
    if (to > from)
        populate((char *)array + from * entry_size, (to - from) * entry_size);
}

#endif
