"""The ram store's cold-page policy: access times and idle marks,
recompression (by hand and in the background) and entropy routing."""
import os
import random
import threading
import time
from pathlib import Path

import pytest

from trueno_ublk.base.codecs import codec_for
from trueno_ublk.stores import open_store
from trueno_ublk.stores.direct import DirectClient
from trueno_ublk.stores.policy import Policy

PAGE = 4096
# Real text: this project's own sources, a page at a time.
SOURCES = b"".join(p.read_bytes() for folder in ("trueno_ublk", "tests", "scripts")
                   for p in sorted((Path(__file__).parents[2] / folder).rglob("*.py")))
NEVER = Policy(recompress_after=0)


def text_pages(n: int, start: int = 0) -> list[bytes]:
    pages = [SOURCES[(start + i) * PAGE:(start + i + 1) * PAGE] for i in range(n)]
    assert all(len(p) == PAGE for p in pages), "not enough source text"
    return pages


def ram(size=1 << 20, policy=NEVER, algorithm="lz4", **options):
    store = open_store("page", size, codec_for(algorithm), policy=policy, **options)
    return store, DirectClient(store)


def fill(client, pages, first=0):
    for i, page in enumerate(pages):
        client.write((first + i) * PAGE, page)


def holds(client, pages, first=0):
    return all(client.read((first + i) * PAGE, PAGE) == page for i, page in enumerate(pages))


def test_recompressed_pages_read_back_take_less_and_survive_a_new_worker():
    pages = text_pages(32)
    store, client = ram()
    fill(client, pages)
    before = store.stats()
    done, saved = store.recompress("all", "zstd:6", 0)
    st = store.stats()
    assert done > 16 and saved > 0
    assert st["recompressed_pages"] == done == st["recompressions"]
    assert st["compr_data_size"] <= before["compr_data_size"] - saved + 16 * done   # slots round up
    assert st["compr_data_size"] < before["compr_data_size"]
    assert holds(client, pages)
    # A second pass finds nothing left to do: moved pages, and pages zstd
    # did not shrink, are settled.
    assert store.recompress("all", "zstd:19", 0) == (0, 0)
    fd = os.dup(store.fd)
    store.close()
    store, client = ram(arena_fd=fd, attach=True)
    assert holds(client, pages)
    assert store.stats()["recompressed_pages"] == done
    assert store.stats()["recompressed_bytes"] == st["recompressed_bytes"]
    store.close()
    os.close(fd)


def test_cold_neighbours_share_frames_that_survive_partial_reads_rewrites_compaction_and_a_new_worker():
    pages = text_pages(64) * 32                     # each frame 32 times: classes of many chunks
    store, client = ram(size=len(pages) * PAGE)
    fill(client, pages)
    done, saved = store.recompress("all", "zstd:6", 0)
    st = store.stats()
    assert done == len(pages) and st["frames"] >= 8 * 32 and st["frame_pages"] >= 2 * st["frames"]
    assert holds(client, pages)
    # A page of a frame read in pieces, and in reverse page order (each
    # read decodes the frame again or finds it decoded).
    assert b"".join(client.read(5 * PAGE + at, 512) for at in range(0, PAGE, 512)) == pages[5]
    assert all(client.read(i * PAGE, PAGE) == pages[i] for i in reversed(range(128)))
    # Rewriting one page of a frame leaves the rest of it where it was.
    new = text_pages(1, start=70)[0]
    client.write(0, new)
    pages[0] = new
    assert store.stats()["frame_pages"] == st["frame_pages"] - 1
    assert holds(client, pages)
    # Every other copy dropped: the frames' chunks go sparse, compaction
    # moves the frames left, every page of each at once.
    for first in range(64, len(pages), 128):
        client.discard(first * PAGE, 64 * PAGE)
        pages[first:first + 64] = [bytes(PAGE)] * 64
    assert store.compact() > 0
    assert holds(client, pages)
    st = store.stats()
    fd = os.dup(store.fd)
    store.close()
    store, client = ram(arena_fd=fd, attach=True)
    assert holds(client, pages)
    found = store.stats()
    for key in ("frames", "frame_pages", "frame_bytes", "recompressed_pages", "recompressed_bytes",
                "compr_data_size", "pages_stored"):
        assert found[key] == st[key], key
    # Rewritten, every frame is freed with its last page.
    rewritten = pages[::-1]
    fill(client, rewritten)
    st = store.stats()
    assert st["frames"] == st["frame_pages"] == st["frame_bytes"] == st["recompressed_bytes"] == 0
    assert holds(client, rewritten)
    store.close()
    os.close(fd)


def test_a_rewritten_page_starts_hot_in_the_fast_codec():
    pages = text_pages(8)
    store, client = ram()
    fill(client, pages)
    done, _ = store.recompress("all", None, 0)      # the policy's codec
    assert done == 8
    new = text_pages(1, start=40)[0]
    client.write(3 * PAGE, new)
    assert store.stats()["recompressed_pages"] == 7
    assert client.read(3 * PAGE, PAGE) == new
    assert store.recompress("all", None, 0)[0] == 1  # rewritten: a candidate again
    store.close()


def test_idle_marks_are_cleared_by_access_and_recompress_idle_takes_only_marked_pages():
    pages = text_pages(16)
    store, client = ram()
    fill(client, pages)
    client.write(20 * PAGE, bytes(PAGE))            # same-filled: nothing to mark
    assert store.mark_idle(0) == 16
    assert store.mark_idle(0) == 0                  # marked already
    client.read(0, 4 * PAGE)                        # pages 0-3 are hot again
    client.write(4 * PAGE, pages[4])                # and page 4, rewritten
    assert store.recompress("idle", "zstd:6", 0)[0] == 11
    assert store.stats()["recompressed_pages"] == 11
    assert holds(client, pages)
    store.close()


def test_max_pages_bounds_a_pass_by_hand():
    pages = text_pages(16)
    store, client = ram()
    fill(client, pages)
    assert store.recompress("all", "zstd:6", 5)[0] == 5
    assert store.stats()["recompressed_pages"] == 5
    assert holds(client, pages)
    store.close()


def test_pages_not_touched_for_age_seconds_are_marked():
    store, client = ram()
    fill(client, text_pages(4))
    assert store.mark_idle(3600) == 0               # written just now
    time.sleep(2.1)                                 # the access clock ticks each half second
    client.read(0, PAGE)
    assert store.mark_idle(1) == 3
    store.close()


def test_huge_pages_are_recompressed_when_the_stronger_codec_fits_them():
    pages = text_pages(8)
    store, client = ram(huge_threshold=64)          # LZ4 stores every text page raw
    fill(client, pages)
    assert store.stats()["huge_pages"] == 8
    done, saved = store.recompress("huge", "zstd:3", 0)
    assert done == 8 and saved > 8 * 2048
    assert store.stats()["huge_pages"] == 0
    assert holds(client, pages)
    store.close()


def test_the_background_recompresses_cold_pages_and_counts_idle_ones():
    pages = text_pages(64)
    store, client = ram(policy=Policy(recompress_after=1))
    fill(client, pages)
    deadline = time.monotonic() + 20
    # A slice that finds the reserve low stops there; the sweep, and its
    # count of idle pages, end in a later one.
    while time.monotonic() < deadline and not (store.stats()["recompressed_pages"] >= 60 and
                                               store.stats()["idle_pages"] > 0):
        time.sleep(0.2)
    st = store.stats()
    assert st["recompressed_pages"] >= 60, st
    assert st["idle_pages"] > 0 and st["background_cpu_seconds"] > 0
    assert holds(client, pages)
    store.close()


def test_pages_of_a_device_swap_writes_to_are_cold_in_seconds_even_while_it_is_busy():
    """Swap's pages count as cold after 2 s, not recompress-after (120 s by
    default), and the background moves them while requests keep coming."""
    pages = text_pages(64)
    swap, swap_client = ram(policy=Policy())
    other, other_client = ram(policy=Policy())
    fill(other_client, pages)
    for i, page in enumerate(pages):
        swap_client.write(i * PAGE, page, swap=True)
    assert swap.stats()["serving_swap"] == 1 and other.stats()["serving_swap"] == 0
    stop = threading.Event()

    def keep_busy():                    # more pages a period than the busy mark, on both
        while not stop.is_set():
            for client in (swap_client, other_client):
                client.read(100 * PAGE, 32 * PAGE)

    busy = threading.Thread(target=keep_busy)
    busy.start()
    try:
        deadline = time.monotonic() + 60
        while swap.stats()["recompressed_pages"] < 60 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop.set()
        busy.join()
    assert swap.stats()["recompressed_pages"] >= 60, swap.stats()
    assert swap.stats()["background_paused"] > 0           # it was busy meanwhile
    assert other.stats()["recompressed_pages"] == 0         # the same wait, not swap's
    assert holds(swap_client, pages) and holds(other_client, pages)
    swap.close()
    other.close()


def test_high_entropy_pages_are_stored_raw_without_the_codec():
    random_page, text_page = random.Random(1).randbytes(PAGE), text_pages(1)[0]
    store, client = ram()
    fill(client, [random_page, text_page])
    st = store.stats()
    assert st["entropy_raw_pages"] == 1 and st["huge_pages"] == 1
    assert st["entropy_pages"][7] == 1 and sum(st["entropy_pages"]) == 2
    assert store.recompress("all", "zstd:19", 0)[0] == 1     # the text page alone: the raw one is settled
    assert holds(client, [random_page, text_page])
    store.close()
    store, client = ram(policy=Policy(recompress_after=0, entropy_threshold=0))
    fill(client, [random_page])
    st = store.stats()
    assert st["entropy_raw_pages"] == 0 and st["huge_pages"] == 1   # LZ4 tried, and failed
    store.close()


@pytest.mark.parametrize("algorithm", ["none", "lz4hc", "zstd"])
def test_every_codec_recompresses_and_reads_back(algorithm):
    pages = text_pages(8)
    store, client = ram(algorithm=algorithm)
    fill(client, pages)
    store.recompress("all", "zstd:6" if algorithm != "zstd" else "lz4hc", 0)
    assert holds(client, pages)
    store.close()


def test_a_bad_recompression_algorithm_is_refused():
    store, _ = ram()
    with pytest.raises(ValueError, match="cannot be none"):
        store.recompress("all", "none", 0)
    with pytest.raises(ValueError, match="unknown algorithm"):
        store.recompress("all", "lzo", 0)
    store.close()


def test_closing_the_store_stops_a_pass_by_hand():
    pages = text_pages(64) * 64                     # 4096 pages; zstd:19 takes seconds over them
    store, client = ram(size=len(pages) * PAGE)
    fill(client, pages)
    result = []
    by_hand = threading.Thread(target=lambda: result.append(store.recompress("all", "zstd:19", 0)))
    by_hand.start()
    deadline = time.monotonic() + 10
    while store.stats()["recompressions"] < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    store.close()                                   # as the worker does at teardown
    by_hand.join(5)
    assert not by_hand.is_alive() and time.monotonic() - started < 5
    assert 10 <= result[0][0] < len(pages)          # stopped part way


def test_a_dictionary_trained_on_the_cold_pages_shrinks_them_and_survives_a_new_worker():
    """Pages alike only far apart -- a block of text they share beside 2 KiB
    of their own random bytes -- gain nothing from frames, whose runs must
    fit a page. A dictionary trained on them holds the shared block, and a
    page then costs little more than its own bytes."""
    rng = random.Random(7)
    pages = [rng.randbytes(2048) + SOURCES[:2048] for _ in range(512)]
    policy = Policy(recompress_after=0, entropy_threshold=0)
    store, client = ram(size=len(pages) * PAGE, policy=policy)
    fill(client, pages)
    assert store.stats()["dict_bytes"] == 0
    done, _ = store.recompress("all", "zstd:6", 0)
    st = store.stats()
    assert done == len(pages) and 0 < st["dict_bytes"] <= 64 << 10
    # Without it the text's half of a page costs ~700 bytes of zstd's.
    assert st["recompressed_bytes"] < len(pages) * (2048 + 256)
    assert holds(client, pages)
    fd = os.dup(store.fd)
    store.close()
    store, client = ram(size=len(pages) * PAGE, policy=policy, arena_fd=fd, attach=True)
    assert holds(client, pages)
    found = store.stats()
    for key in ("dict_bytes", "recompressed_bytes", "compr_data_size"):
        assert found[key] == st[key], key
    # The dictionary's chunk is held by the new worker as by the old one.
    assert found["mem_used_total"] - found["mem_reserve"] == st["mem_used_total"] - st["mem_reserve"]
    # Rewritten and recompressed again, the pages use the dictionary the
    # arena keeps: no second one is trained.
    fill(client, pages[::-1])
    assert store.recompress("all", "zstd:6", 0)[0] == len(pages)
    assert store.stats()["recompressed_bytes"] < len(pages) * (2048 + 256)
    assert holds(client, pages[::-1])
    store.close()
    os.close(fd)
