"""Reading stored objects back in ranges (what settling a crashed recording needs):
the same answers from the node's disk, the memory twin, moto's S3 and the OSS server."""

from __future__ import annotations

import uuid

import pytest

from storage_adapters.base import StorageAdapter, StorageNotFound
from storage_adapters.local import LocalAdapter
from storage_adapters.memory import MemoryAdapter, MemoryStore
from storage_adapters.multipart import ObjectStoreAdapter
from tests.storage.test_oss import make_adapter as oss_adapter
from tests.storage.test_s3 import make_adapter as s3_adapter

BODY = bytes(range(256)) * 40  # 10240 bytes


@pytest.fixture(params=["local", "memory", "memory-store", "s3", "oss"])
def adapter(request, tmp_path) -> StorageAdapter:
    if request.param == "local":
        return LocalAdapter(tmp_path, "bucket")
    if request.param == "memory":
        return MemoryAdapter()
    if request.param == "memory-store":
        return ObjectStoreAdapter(MemoryStore())
    if request.param == "s3":
        return s3_adapter("compatible", request.getfixturevalue("moto_server"), request.getfixturevalue("s3_bucket"))
    return oss_adapter(request.getfixturevalue("oss_server"))


def put(adapter: StorageAdapter, key: str, data: bytes) -> None:
    sink = adapter.open_object(key)
    sink.write(data)
    sink.close()


def test_ranges_name_the_object_size(adapter):
    key = f"rr/{uuid.uuid4().hex}.mp4"
    put(adapter, key, BODY)
    assert adapter.read_range(key, 0, 16) == (BODY[:16], len(BODY))
    assert adapter.read_range(key, 5000, 100) == (BODY[5000:5100], len(BODY))
    assert adapter.read_range(key, len(BODY) - 10, 4096) == (BODY[-10:], len(BODY))  # fewer at the end
    assert adapter.read_range(key, len(BODY), 16) == (b"", len(BODY))  # at the end: nothing, and the size
    assert adapter.read_range(key, 0, 1 << 20) == (BODY, len(BODY))


def test_a_missing_object_is_none(adapter):
    assert adapter.read_range(f"rr/{uuid.uuid4().hex}.mp4", 0, 16) is None


def test_a_missing_bucket_is_not_found_not_a_missing_object(moto_server, s3_bucket):
    adapter = s3_adapter("compatible", moto_server, "no-such-bucket-rr")
    with pytest.raises(StorageNotFound):
        adapter.read_range("rr/x.mp4", 0, 16)
