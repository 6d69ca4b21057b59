"""A task's Destination: node disk or bucket decided once, and the answers it gives."""

from __future__ import annotations

import pickle
from dataclasses import replace

import pytest

from contract.storage import StorageTarget
from contract.worker import RecordingSpec
from storage_adapters.base import InvalidObjectKey, StorageError, StorageUnavailable
from storage_adapters.destination import Destination, destination_for
from storage_adapters.local import LocalAdapter
from storage_adapters.multipart import ObjectStoreAdapter
from storage_adapters.spool import SpoolAdapter

SECRET = "do-not-leak-8c1f"
S3 = StorageTarget(1, "media", region="eu-west-1", access_key_id="AKIDEXAMPLE", access_key_secret=SECRET)


def bucket_destination(tmp_path, overrides=None) -> Destination:
    return destination_for(S3, overrides, tmp_path / "storage", tmp_path / "spool", 1 << 20)


def test_the_nodes_disk_is_written_in_place(tmp_path):
    destination = destination_for(StorageTarget(0, "b"), {0: "http://ignored"}, tmp_path / "storage",
                                  tmp_path / "spool", 1 << 20)
    assert not destination.is_remote
    writer = destination.writer_adapter("T")
    assert isinstance(writer, LocalAdapter) and writer.bucket_root == (tmp_path / "storage" / "b").resolve()
    assert isinstance(destination.upload_adapter(), LocalAdapter)
    assert destination.public_url("rec/a.mp4") == (tmp_path / "storage" / "b" / "rec" / "a.mp4").as_uri()
    sink = writer.open_object("rec/a.mp4")
    sink.write(b"abc")
    sink.close()
    assert destination.stored_size("rec/a.mp4") == 3 and destination.stored_size("rec/none") is None


def test_a_bucket_is_written_through_the_spool_and_uploaded_on_the_override(tmp_path):
    destination = bucket_destination(tmp_path, {2: "http://127.0.0.1:8", 1: "http://127.0.0.1:9"})
    assert destination.is_remote
    writer = destination.writer_adapter("T" * 16)
    assert isinstance(writer, SpoolAdapter)
    uploads = destination.upload_adapter()
    assert isinstance(uploads, ObjectStoreAdapter)
    assert uploads.store._s3.meta.endpoint_url == "http://127.0.0.1:9"  # this vendor's override only
    # FileUrl is the vendor's public form, never the override
    assert destination.public_url("rec/a b.mp4") == "https://media.s3.eu-west-1.amazonaws.com/rec/a%20b.mp4"
    assert bucket_destination(tmp_path).upload_adapter().store._s3.meta.endpoint_url == \
        "https://s3.eu-west-1.amazonaws.com"


def test_the_worker_gets_no_credentials(tmp_path):
    destination = bucket_destination(tmp_path)
    spec = RecordingSpec("T" * 16, 3, "mp4", "rec/", 1, 15, destination.for_worker())
    assert SECRET.encode() not in pickle.dumps(spec) and b"AKIDEXAMPLE" not in pickle.dumps(spec)
    assert spec.storage.remote and spec.storage.spool_root == str(tmp_path / "spool")
    assert isinstance(Destination(spec.storage).writer_adapter(spec.task_id), SpoolAdapter)


def test_a_destination_pickles_as_its_spec_and_hides_credentials(tmp_path):
    destination = bucket_destination(tmp_path)
    destination.public_url("k")  # builds (and keeps) an SDK client, which does not pickle
    copy = pickle.loads(pickle.dumps(destination))
    assert copy.spec == destination.spec and copy.spec.target.access_key_secret == SECRET
    assert SECRET not in repr(destination)


@pytest.mark.parametrize("vendor, name", [(5, "Alibaba VOD"), (6, "Tencent VOD")])
def test_vod_vendors_are_refused_by_name(tmp_path, vendor, name):
    with pytest.raises(StorageError, match=rf"Vendor {vendor} \({name}\) is not supported"):
        destination_for(StorageTarget(vendor, "b"), None, tmp_path, tmp_path, 1)


def test_probe_on_the_nodes_disk_only_checks_the_folder_stays_inside(tmp_path):
    destination = destination_for(StorageTarget(0, "b"), None, tmp_path / "storage", tmp_path / "spool", 1)
    assert destination.probe("rec/") is None
    assert not (tmp_path / "storage").exists()  # nothing written
    with pytest.raises(InvalidObjectKey):
        destination.probe("../../")


def test_probe_of_an_unreachable_bucket(tmp_path, closed_port):
    destination = bucket_destination(tmp_path, {1: f"http://127.0.0.1:{closed_port}"})
    with pytest.raises(StorageUnavailable) as caught:
        destination.probe("rec/")
    assert SECRET not in str(caught.value)


# one target per vendor and addressing form; FileUrl comes from the spec's prefix, the vendor's client never built
URL_FORMS = [
    S3, StorageTarget(1, "a.dotted.bucket", region="us-east-2"), StorageTarget(1, "m", endpoint="http://10.0.0.5:9000"),
    StorageTarget(10, "m", endpoint="https://minio.example.com"), StorageTarget(10, "m", endpoint="http://127.0.0.1:9"),
    StorageTarget(2, "media", region="cn-hangzhou"), StorageTarget(2, "media", endpoint="http://127.0.0.1:9"),
    StorageTarget(3, "m-1250000000", region="ap-guangzhou"), StorageTarget(4, "m", region="ap-southeast-1"),
    StorageTarget(7, "m", region="ap-southeast-1"), StorageTarget(8, "m"), StorageTarget(9, "m", region="wuxi1"),
]


@pytest.mark.parametrize("target", URL_FORMS, ids=lambda t: f"vendor{t.vendor}-{t.endpoint or t.region or 'default'}")
def test_a_buckets_urls_are_those_of_its_vendors_adapter_in_the_node_and_in_workers(tmp_path, target):
    from storage_adapters.vendors import adapter_for

    target = replace(target, access_key_id="AKIDEXAMPLE", access_key_secret=SECRET)
    destination = destination_for(target, {2: "http://127.0.0.1:8"}, tmp_path / "storage", tmp_path / "spool", 1 << 20)
    key = "rec/ä b+c.m3u8"
    expected = adapter_for(target).object_url(key)
    assert expected.startswith(("https://", "http://")) and destination.spec.url_prefix
    assert destination.public_url(key) == expected
    assert destination.writer_adapter("T").object_url(key) == expected  # what a worker's HLS playlist lists
    assert pickle.loads(pickle.dumps(destination.for_worker())).url_prefix == destination.spec.url_prefix


def test_a_bucket_without_a_url_form_gets_no_url(tmp_path):
    destination = destination_for(StorageTarget(10, "m"), None, tmp_path / "storage", tmp_path / "spool", 1 << 20)
    assert destination.public_url("a.mp4") == "" and destination.writer_adapter("T").object_url("a.mp4") == ""


def test_every_bucket_vendor_has_its_url_form():
    from storage_adapters.vendor_codes import LOCAL_DISK
    from storage_adapters.vendors import ADAPTERS, URL_PREFIXES

    assert set(URL_PREFIXES) == set(ADAPTERS) - {LOCAL_DISK}  # the two tables name the same vendors
