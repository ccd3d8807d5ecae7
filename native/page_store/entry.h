/*
 * A page's entry: one u64 of the page map says what the page holds. It is
 * changed with one 64-bit store (publish()), so that the map alone
 * describes the arena at every instant and a new I/O worker rebuilds
 * everything else from it. Its bits, one kind of entry a row:
 *
 *   63    62     61     60-59  58       57-24        23-12  11-0
 *   0     0      0      0      0        0            0      0          never written, or discarded: zeros
 *   SAME  0      0      0      0        0            0      0          same-filled: the word in fills[]
 *   0     STORED PADDED CODEC  SETTLED  chunk        slot   len - 1    a payload in a slot
 *   0     0      BACKED 0      0        block (bits 57-0)              on the backing device, whole (backing.c)
 *   0     0      BACKED CODEC  0        span/16 - 1 (57-50), at/16     its payload packed there (backing.c)
 *   0     0      BACKED 0      ZRAM     the page's own index           in the kernel zram tier (zram_tier.c)
 *
 *   PADDED   the payload lies in a larger class's slot, its first two
 *            bytes its length (put_payload()); len is the slot's
 *   CODEC    the decoder of a recompressed payload (ENTRY_LZ4 or
 *            ENTRY_ZSTD: any level of a family decodes alike); 0 for the
 *            store's own codec; ENTRY_FRAME for a page in a frame (below)
 *   SETTLED  not worth recompressing (tried, or stored raw for its
 *            entropy) until it is rewritten
 *
 * A packed payload is a record at byte `at` of the backing device: its
 * length (two bytes), then the payload as it was in its slot (a frame's
 * header included), `span` bytes in all, a multiple of 16, at most a page.
 *
 * A chunk number has 34 bits: 2^31 chunks and a class's worth more, 64 TiB
 * raw. BACKED reuses PADDED's bit and ZRAM SETTLED's: no stored entry is
 * without STORED, so the kinds never meet.
 *
 * A frame: a run of neighbouring cold pages compressed together with zstd
 * into one slot (recompress.c), which saves what each page's own frame
 * would repeat. The run lies inside one group of FRAME_PAGES pages
 * (aligned), whose pages share a stripe lock. Every page of the run has
 * the same entry: ENTRY_FRAME, the slot, the slot's payload length. The
 * payload is a header -- the run's first page within its group and its
 * length in pages -- then one zstd frame of the run's pages. The slot is
 * freed when the last entry pointing at it changes (frame_release()).
 *
 * A frame's first header byte also says (FRAME_DICT) whether its zstd
 * frame was made with the store's dictionary (dictionary.c). Once there is
 * one, every cold page is put in a frame, one of a single page if need be:
 * the header is what tells a reader to decode with the dictionary.
 */
#ifndef TRUENO_ENTRY_H
#define TRUENO_ENTRY_H

#include <stdbool.h>
#include <stdint.h>

#define ENTRY_SAME        (1ull << 63)
#define ENTRY_STORED      (1ull << 62)
#define ENTRY_PADDED      (1ull << 61)
#define ENTRY_CODEC_SHIFT 59
#define ENTRY_CODEC       (3ull << ENTRY_CODEC_SHIFT)
#define ENTRY_LZ4         1u
#define ENTRY_ZSTD        2u
#define ENTRY_FRAME       3u
#define ENTRY_SETTLED     (1ull << 58)
/* What compaction and recompression keep when they move a payload. */
#define ENTRY_FLAGS       (ENTRY_PADDED | ENTRY_CODEC | ENTRY_SETTLED)
#define ENTRY_BACKED      ENTRY_PADDED
#define ENTRY_ZRAM        (1ull << 58)
#define ENTRY_BLOCK_MASK  (ENTRY_ZRAM - 1)
#define PACKED_SPAN_SHIFT 50
#define PACKED_AT_MASK    ((1ull << PACKED_SPAN_SHIFT) - 1)
#define ENTRY_CHUNK_SHIFT 24
#define ENTRY_CHUNK_MASK  ((1ull << 34) - 1)
#define ENTRY_SLOT_SHIFT  12
#define ENTRY_FIELD_MASK  0xfffull

#define FRAME_PAGES       8
#define FRAME_HEADER      2
#define FRAME_DICT        0x80u   /* in the header's first byte: made with the dictionary */

static inline uint64_t entry_stored(uint64_t chunk, uint32_t slot, uint32_t len)
{
    return ENTRY_STORED | chunk << ENTRY_CHUNK_SHIFT | (uint64_t)slot << ENTRY_SLOT_SHIFT | (len - 1);
}
static inline bool entry_backed(uint64_t e)
{
    return (e & (ENTRY_SAME | ENTRY_STORED | ENTRY_BACKED)) == ENTRY_BACKED;
}
static inline uint64_t entry_backed_at(uint64_t block) { return ENTRY_BACKED | block; }
static inline bool entry_in_zram(uint64_t e) { return entry_backed(e) && (e & ENTRY_ZRAM); }
static inline uint64_t entry_zram(uint64_t index) { return ENTRY_BACKED | ENTRY_ZRAM | index; }
static inline uint64_t entry_block(uint64_t e) { return e & ENTRY_BLOCK_MASK; }
static inline bool entry_packed(uint64_t e) { return entry_backed(e) && !entry_in_zram(e) && (e & ENTRY_CODEC); }
static inline uint64_t entry_packed_at(unsigned codec, uint64_t at, uint32_t span)
{
    return ENTRY_BACKED | (uint64_t)codec << ENTRY_CODEC_SHIFT | (uint64_t)(span / 16 - 1) << PACKED_SPAN_SHIFT |
           at / 16;
}
static inline uint64_t packed_at(uint64_t e) { return (e & PACKED_AT_MASK) * 16; }
static inline uint32_t packed_span(uint64_t e) { return ((uint32_t)(e >> PACKED_SPAN_SHIFT) & 0xff) * 16 + 16; }
static inline unsigned entry_codec(uint64_t e) { return (unsigned)((e & ENTRY_CODEC) >> ENTRY_CODEC_SHIFT); }
static inline uint64_t entry_chunk(uint64_t e) { return (e >> ENTRY_CHUNK_SHIFT) & ENTRY_CHUNK_MASK; }
static inline uint32_t entry_slot(uint64_t e) { return (e >> ENTRY_SLOT_SHIFT) & ENTRY_FIELD_MASK; }
static inline uint32_t entry_len(uint64_t e) { return (uint32_t)(e & ENTRY_FIELD_MASK) + 1; }

#endif
