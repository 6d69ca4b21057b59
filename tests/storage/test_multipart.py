"""MultipartSink, the part-size rule and probe() on the in-memory twin (no network)."""

from __future__ import annotations

import hashlib
import random
import re

import pytest

from storage_adapters.base import (
    InvalidObjectKey,
    ObjectStore,
    StorageAccessDenied,
    StorageError,
    StorageNotFound,
    StorageUnavailable,
)
from storage_adapters.local import LocalAdapter
from storage_adapters.memory import MemoryStore
from storage_adapters.multipart import (
    DOUBLE_EVERY,
    MAX_PARTS,
    MIN_PART_SIZE,
    MultipartSink,
    ObjectStoreAdapter,
    part_size_for,
    parts_needed,
    probe,
)

MiB = 1024 * 1024


def part_sizes(store: MemoryStore) -> list[int]:
    return [detail[1] for op, _, detail in store.calls if op == "upload_part"]


def test_memory_store_is_an_object_store():
    assert isinstance(MemoryStore(), ObjectStore)


def test_parts_are_cut_at_5_mib_and_the_last_may_be_short():
    store = MemoryStore()
    sink = MultipartSink("a.mp4", store)
    data = random.Random(5).randbytes(12 * MiB + 3)
    for offset in range(0, len(data), 1_000_003):
        sink.write(data[offset:offset + 1_000_003])
    assert part_sizes(store) == [MIN_PART_SIZE, MIN_PART_SIZE]  # uploaded while writing
    assert sink.pending_bytes == 2 * MiB + 3
    info = sink.close()
    assert part_sizes(store) == [MIN_PART_SIZE, MIN_PART_SIZE, 2 * MiB + 3]
    assert [op for op, _, _ in store.calls] == ["begin", "upload_part", "upload_part", "upload_part", "complete"]
    assert store.calls[-1][2] == [1, 2, 3]
    assert store.objects["a.mp4"] == data and store.pending_uploads() == []
    assert info.size == len(data) and info.sha256 == hashlib.sha256(data).hexdigest()
    assert sink.uploaded_bytes == len(data)


def test_an_exact_multiple_has_no_empty_last_part():
    store = MemoryStore()
    sink = MultipartSink("k", store)
    sink.write(b"\1" * (2 * MIN_PART_SIZE))
    sink.close()
    assert part_sizes(store) == [MIN_PART_SIZE, MIN_PART_SIZE]
    assert len(store.objects["k"]) == 2 * MIN_PART_SIZE


@pytest.mark.parametrize("size", [0, 1, MIN_PART_SIZE - 1])
def test_objects_below_one_part_are_a_single_put(size):
    store = MemoryStore()
    sink = MultipartSink("small.aac", store)
    sink.write(b"x" * size)
    sink.close()
    assert [op for op, _, _ in store.calls] == ["put"]
    assert store.objects["small.aac"] == b"x" * size


def test_the_part_size_rule():
    assert [part_size_for(n) for n in (1, 2500, 2501, 5000, 5001, 7501, 10_000)] == [
        5 * MiB, 5 * MiB, 10 * MiB, 10 * MiB, 20 * MiB, 40 * MiB, 40 * MiB]
    assert part_size_for(1) == MIN_PART_SIZE and DOUBLE_EVERY == 2500
    # every part but the last is >= 5 MiB, whatever the number
    assert min(part_size_for(n) for n in range(1, MAX_PARTS + 1)) >= 5 * MiB


def test_24_hours_at_8_mbps_stays_under_10000_parts():
    day_at_8_mbps = 24 * 3600 * 8_000_000 // 8  # 86.4 GB
    parts = parts_needed(day_at_8_mbps)
    assert parts == 7245 and parts < MAX_PARTS
    assert part_size_for(parts) == 20 * MiB  # the tail at StopRecord after 24 h is at most 20 MiB
    assert parts_needed(2 * day_at_8_mbps) < MAX_PARTS  # 48 h too (the hosted service's extended limit)
    # what 10,000 parts hold: 183 GiB, i.e. 24 h at 18 Mbps
    capacity = sum(part_size_for(n) for n in range(1, MAX_PARTS + 1))
    assert capacity == 187_500 * MiB and capacity > 24 * 3600 * 18_000_000 // 8
    # a typical recording (2 h at 8 Mbps) uses 5 MiB parts throughout
    assert part_size_for(parts_needed(2 * 3600 * 1_000_000)) == 5 * MiB


def test_the_sink_follows_the_growth_rule():
    """The same rule, scaled down (1 KiB parts doubling every 3 parts) so it runs in memory."""
    store = MemoryStore(min_part_size=1024)
    sink = MultipartSink("grow", store, min_part_size=1024, double_every=3)
    data = random.Random(6).randbytes(3 * 1024 + 3 * 2048 + 3 * 4096 + 100)
    for offset in range(0, len(data), 777):
        sink.write(data[offset:offset + 777])
    sink.close()
    assert part_sizes(store) == [1024] * 3 + [2048] * 3 + [4096] * 3 + [100]
    assert store.objects["grow"] == data


def test_more_than_10000_parts_is_an_error_not_a_silent_drop():
    store = MemoryStore(min_part_size=1)
    sink = MultipartSink("huge", store, min_part_size=1, double_every=10**9)
    sink.write(b"x" * (MAX_PARTS - 1))
    sink.write(b"y")  # part 10,000 waits for close
    assert len(part_sizes(store)) == MAX_PARTS - 1
    with pytest.raises(StorageError, match="10000 parts"):
        sink.write(b"z")


def test_a_failed_part_keeps_its_bytes_and_can_be_sent_again():
    store = MemoryStore()
    sink = MultipartSink("retry.mp4", store)
    data = random.Random(7).randbytes(11 * MiB)
    store.fail_next("upload_part", StorageUnavailable("connection reset"))
    with pytest.raises(StorageUnavailable):
        sink.write(data[:6 * MiB])
    assert sink.size == 6 * MiB and sink.pending_bytes == 6 * MiB  # accepted, not lost
    sink.flush()  # the retry: same part number, same bytes
    assert sink.parts[0][0] == 1 and sink.pending_bytes == MiB
    sink.write(data[6 * MiB:])
    store.fail_next("complete", StorageUnavailable("timeout"))
    with pytest.raises(StorageUnavailable):
        sink.close()
    info = sink.close()  # completing again works
    assert store.objects["retry.mp4"] == data and info.sha256 == hashlib.sha256(data).hexdigest()
    assert [detail[0] for op, _, detail in store.calls if op == "upload_part"] == [1, 1, 2, 3]


def test_a_failed_put_can_be_sent_again():
    store = MemoryStore()
    sink = MultipartSink("p", store)
    sink.write(b"abc")
    store.fail_next("put", StorageUnavailable("503"))
    with pytest.raises(StorageUnavailable):
        sink.close()
    assert sink.close().size == 3 and store.objects["p"] == b"abc"


def test_abort_drops_the_upload_and_never_raises():
    store = MemoryStore()
    sink = MultipartSink("a", store)
    sink.write(b"\0" * (MIN_PART_SIZE + 10))
    assert store.pending_uploads() == ["a"]
    sink.abort()
    assert store.pending_uploads() == [] and "a" not in store.objects
    with pytest.raises(StorageError):
        sink.write(b"more")

    failing = MultipartSink("b", store)
    failing.write(b"\0" * MIN_PART_SIZE)
    store.fail_next("abort", StorageUnavailable("down"))
    failing.abort()  # best effort: kept, not raised
    assert isinstance(failing.abort_error, StorageUnavailable)

    untouched = MultipartSink("c", store)
    untouched.write(b"small")
    calls = len(store.calls)
    untouched.abort()  # nothing was begun: nothing to call
    assert len(store.calls) == calls


def test_adapter_over_a_store():
    store = MemoryStore("bkt")
    adapter = ObjectStoreAdapter(store)
    sink = adapter.open_object("rec/x.mp4")
    sink.write(b"12345")
    sink.close()
    assert adapter.object_size("rec/x.mp4") == 5 and adapter.object_size("none") is None
    assert adapter.object_url("rec/x.mp4") == "memory://bkt/rec/x.mp4"
    for bad in ["", "/x", "a\rb"]:
        with pytest.raises(InvalidObjectKey):
            adapter.open_object(bad)


def test_probe_writes_reads_and_deletes():
    store = MemoryStore()
    result = probe(ObjectStoreAdapter(store), "folder")
    assert result is not None and result.readable and result.deleted
    assert [op for op, _, _ in store.calls] == ["put", "head", "delete"]
    assert re.fullmatch(r"folder/recnode-probe-\d{8}T\d{6}Z-[0-9a-f]{8}\.txt", store.calls[0][1])
    assert store.objects == {}


def test_probe_raises_the_put_error():
    store = MemoryStore()
    store.bucket_exists = False
    with pytest.raises(StorageNotFound):
        probe(store)
    store.bucket_exists = True
    store.fail_next("put", StorageAccessDenied("InvalidAccessKeyId"))
    with pytest.raises(StorageAccessDenied):
        probe(store)


def test_probe_deletes_what_a_key_that_may_not_read_may_delete():
    store = MemoryStore()
    store.fail_next("head", StorageAccessDenied("no GetObject"))
    result = probe(store, "rec/")
    assert result is not None and not result.readable and result.deleted and store.objects == {}


def test_probe_accepts_a_write_only_key():
    store = MemoryStore()
    store.fail_next("head", StorageAccessDenied("no GetObject"))
    store.fail_next("delete", StorageAccessDenied("no DeleteObject"))
    result = probe(store)
    assert result is not None and not result.readable and not result.deleted


def test_probe_skips_the_node_disk(tmp_path):
    assert probe(LocalAdapter(tmp_path, "b")) is None
