"""S3 adapters (Vendor 1 with an endpoint override, Vendor 10 with EndPoint,
Vendor 3 with an override) against moto's real server, IAM authentication on."""

from __future__ import annotations

import hashlib
import random
import socket
import time
import traceback
import uuid

import pytest

from contract.storage import StorageTarget
from storage_adapters.base import (
    InvalidObjectKey,
    StorageAccessDenied,
    StorageError,
    StorageNotFound,
    StorageUnavailable,
    UploadNotFound,
)
from storage_adapters.multipart import (
    MIN_PART_SIZE,
    PROBE_BODY,
    MultipartSink,
    ObjectStoreAdapter,
    ProbeResult,
    probe,
)
from storage_adapters.s3 import S3Store
from storage_adapters.vendors import adapter_for

MiB = 1024 * 1024
# (Vendor, Region) of each vendor the S3 adapter serves, reached through the node's endpoint override.
# Regions outside mainland China: moto files cn-* requests under AWS's China partition, which has
# none of its IAM users.
OVERRIDDEN = {"s3-override": (1, "us-east-1"), "cos-override": (3, "ap-guangzhou"),
              "kodo-override": (4, "ap-southeast-1"), "obs-override": (7, "ap-southeast-1"),
              "gcs-override": (8, ""), "eos-override": (9, "wuxi1")}
FLAVORS = ["compatible", *OVERRIDDEN]


def make_adapter(flavor: str, moto, bucket: str, *, secret: str | None = None, key_id: str | None = None,
                 endpoint: str | None = None) -> ObjectStoreAdapter:
    endpoint = endpoint or moto.endpoint
    credentials = dict(access_key_id=key_id or moto.access_key_id,
                       access_key_secret=moto.access_key_secret if secret is None else secret)
    if flavor == "compatible":
        adapter = adapter_for(StorageTarget(10, bucket, endpoint=endpoint, **credentials))
    else:
        vendor, region = OVERRIDDEN[flavor]
        adapter = adapter_for(StorageTarget(vendor, bucket, region=region, **credentials), endpoint)
    assert isinstance(adapter, ObjectStoreAdapter) and isinstance(adapter.store, S3Store)
    return adapter


@pytest.fixture(params=FLAVORS)
def flavor(request) -> str:
    return request.param


@pytest.fixture
def adapter(flavor, moto_server, s3_bucket) -> ObjectStoreAdapter:
    return make_adapter(flavor, moto_server, s3_bucket)


@pytest.fixture
def key(flavor) -> str:
    return f"rec/{flavor}/{uuid.uuid4().hex}_VA.mp4"


def uneven_chunks(data: bytes, seed: int = 7):
    rng = random.Random(seed)
    offset = 0
    while offset < len(data):
        size = rng.choice([1, 188, 4096, 65537, 333_333, 1_048_579])
        yield data[offset:offset + size]
        offset += size


def pending_uploads(moto, bucket: str, key: str) -> list[str]:
    listing = moto.client().list_multipart_uploads(Bucket=bucket, Prefix=key)
    return [upload["UploadId"] for upload in listing.get("Uploads", [])]


def test_large_object_streams_as_multipart_and_matches(adapter, moto_server, s3_bucket, key):
    data = random.Random(1).randbytes(12 * MiB + 12345)
    sink = adapter.open_object(key)
    assert isinstance(sink, MultipartSink)
    client = moto_server.client()
    listed_before_close = None
    for chunk in uneven_chunks(data):
        sink.write(chunk)
        if listed_before_close is None and sink.size > 6 * MiB:
            # the first part is in the bucket while the object is still being written
            parts = client.list_parts(Bucket=s3_bucket, Key=key, UploadId=sink.upload_id)["Parts"]
            listed_before_close = [(p["PartNumber"], p["Size"]) for p in parts]
    assert listed_before_close == [(1, MIN_PART_SIZE)]
    info = sink.close()
    assert info.size == len(data) and info.sha256 == hashlib.sha256(data).hexdigest()
    stored = client.get_object(Bucket=s3_bucket, Key=key)
    body = stored["Body"].read()
    assert hashlib.sha256(body).hexdigest() == info.sha256 and body == data
    assert stored["ETag"].strip('"').endswith("-3")  # 5 MiB + 5 MiB + the rest
    assert stored["ContentType"] == "video/mp4"
    assert adapter.object_size(key) == len(data)
    assert sink.uploaded_bytes == len(data) and sink.pending_bytes == 0
    assert pending_uploads(moto_server, s3_bucket, key) == []


def test_small_object_is_one_put(adapter, moto_server, s3_bucket, key):
    data = b"\x00tiny object\xff" * 100
    sink = adapter.open_object(key)
    sink.write(data[:7])
    sink.write(data[7:])
    assert adapter.object_size(key) is None  # nothing in the bucket until close
    info = sink.close()
    assert sink.upload_id is None  # no multipart upload was begun
    body = moto_server.client().get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    assert body == data and info.sha256 == hashlib.sha256(data).hexdigest()
    assert "-" not in moto_server.client().head_object(Bucket=s3_bucket, Key=key)["ETag"]


def test_abort_leaves_no_object_and_no_pending_upload(adapter, moto_server, s3_bucket, key):
    sink = adapter.open_object(key)
    sink.write(random.Random(2).randbytes(6 * MiB))
    assert sink.upload_id is not None and pending_uploads(moto_server, s3_bucket, key) == [sink.upload_id]
    sink.abort()
    assert sink.abort_error is None
    assert adapter.object_size(key) is None
    assert pending_uploads(moto_server, s3_bucket, key) == []


def test_put_head_delete(adapter, key):
    store = adapter.store
    assert store.head(key) is None
    store.put(key, b"12345")
    assert store.head(key) == 5 and adapter.object_size(key) == 5
    store.delete(key)
    assert store.head(key) is None
    store.delete(key)  # deleting what is absent is fine


def test_unknown_upload_id_is_upload_not_found(adapter, key):
    # (moto answers UploadPart / CompleteMultipartUpload of an unknown id with a 500, S3 with NoSuchUpload)
    with pytest.raises(UploadNotFound) as caught:
        adapter.store.abort(key, "no-such-upload")
    assert isinstance(caught.value, StorageNotFound) and caught.value.vendor_code == "NoSuchUpload"


def test_url_forms(flavor, moto_server, s3_bucket):
    adapter = make_adapter(flavor, moto_server, s3_bucket)
    url = adapter.object_url("rec/a b%2F_VA.mp4")
    expected = {  # the vendor's public form: never the override
        "s3-override": f"https://{s3_bucket}.s3.us-east-1.amazonaws.com/rec/a%20b%252F_VA.mp4",
        "compatible": f"{moto_server.endpoint}/{s3_bucket}/rec/a%20b%252F_VA.mp4",
        "cos-override": f"https://{s3_bucket}.cos.ap-guangzhou.myqcloud.com/rec/a%20b%252F_VA.mp4",
        "kodo-override": f"https://{s3_bucket}.s3.ap-southeast-1.qiniucs.com/rec/a%20b%252F_VA.mp4",
        "obs-override": f"https://{s3_bucket}.obs.ap-southeast-1.myhuaweicloud.com/rec/a%20b%252F_VA.mp4",
        "gcs-override": f"https://storage.googleapis.com/{s3_bucket}/rec/a%20b%252F_VA.mp4",
        "eos-override": f"https://eos-wuxi-1.cmecloud.cn/{s3_bucket}/rec/a%20b%252F_VA.mp4",
    }[flavor]
    assert url == expected


def test_probe_passes_and_cleans_up(adapter, moto_server, s3_bucket):
    result = probe(adapter, "folder/sub")
    assert isinstance(result, ProbeResult) and result.readable and result.deleted
    assert result.key.startswith("folder/sub/recnode-probe-") and result.key.endswith(".txt")
    assert adapter.object_size(result.key) is None


def test_probe_with_a_write_only_key_leaves_a_recognisable_object(flavor, moto_server, s3_bucket):
    key_id, secret = moto_server.write_only_key
    adapter = make_adapter(flavor, moto_server, s3_bucket, key_id=key_id, secret=secret)
    result = probe(adapter, f"rec/{flavor}/")
    assert isinstance(result, ProbeResult) and not result.readable and not result.deleted
    # it stays where the task's files go, and says what it is to whoever finds it
    assert result.key.startswith(f"rec/{flavor}/recnode-probe-") and result.key.endswith(".txt")
    stored = moto_server.client().get_object(Bucket=s3_bucket, Key=result.key)
    assert stored["Body"].read() == PROBE_BODY and stored["ContentType"].startswith("text/plain")
    assert b"Safe to delete" in PROBE_BODY


def test_missing_bucket_is_not_found(flavor, moto_server, s3_bucket):
    adapter = make_adapter(flavor, moto_server, "no-such-bucket-here")
    with pytest.raises(StorageNotFound) as caught:
        probe(adapter)
    assert caught.value.vendor_code == "NoSuchBucket"
    with pytest.raises(StorageNotFound):  # HEAD's bare 404 is told apart from a missing key
        adapter.object_size("k")
    sink = adapter.open_object("k")
    sink.write(b"x")
    with pytest.raises(StorageNotFound):
        sink.close()


@pytest.fixture
def localhost_subdomains(monkeypatch) -> list[str]:
    """Resolve `<name>.localhost` to loopback, as RFC 6761 (6.3) asks of resolvers and this
    host's (files, then DNS) does not; returns the names looked up."""
    asked: list[str] = []
    resolve = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if isinstance(host, str) and host.endswith(".localhost"):
            asked.append(host)
            host = "127.0.0.1"
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def test_vendor_10_with_an_oss_region_puts_the_bucket_in_the_host_name(moto_server, s3_bucket,
                                                                       localhost_subdomains):
    """The hosted service's Vendor 10 example on OSS (Region `oss-...`): OSS takes only
    virtual-hosted requests, so the bucket goes in the host name, over real HTTP here."""
    endpoint = f"http://localhost:{moto_server.port}"
    adapter = adapter_for(StorageTarget(10, s3_bucket, region="oss-test-1", endpoint=endpoint,
                                        access_key_id=moto_server.access_key_id,
                                        access_key_secret=moto_server.access_key_secret))
    data = random.Random(3).randbytes(MIN_PART_SIZE + 4321)  # a multipart upload and its parts
    sink = adapter.open_object("oss-style/a_VA.mp4")
    sink.write(data)
    sink.close()
    assert probe(adapter, "oss-style/").deleted
    assert set(localhost_subdomains) == {f"{s3_bucket}.localhost"}  # every request went to the bucket's host
    assert fetch_object(moto_server, s3_bucket, "oss-style/a_VA.mp4") == data
    assert adapter.object_url("oss-style/a_VA.mp4") == \
        f"http://{s3_bucket}.localhost:{moto_server.port}/oss-style/a_VA.mp4"


def fetch_object(moto, bucket: str, key: str) -> bytes:
    return moto.client().get_object(Bucket=bucket, Key=key)["Body"].read()


SECRET = "wrong-Secret-b7c94e2f-must-not-leak"


def assert_no_secret(error: BaseException, *secrets: str) -> None:
    """Neither the error nor anything chained to it shows a credential."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    assert len(chain) == 1  # the vendor's exception (and its request) is not kept
    texts = [str(error), repr(error), *map(str, error.args), *traceback.format_exception_only(error)]
    for secret in secrets:
        for text in texts:
            assert secret not in text


def test_wrong_secret_is_access_denied(flavor, moto_server, s3_bucket, key):
    adapter = make_adapter(flavor, moto_server, s3_bucket, secret=SECRET)
    with pytest.raises(StorageAccessDenied) as caught:
        probe(adapter)
    assert caught.value.vendor_code == "SignatureDoesNotMatch" and caught.value.http_status == 403
    assert not caught.value.retryable
    assert_no_secret(caught.value, SECRET, moto_server.access_key_secret, moto_server.access_key_id)
    with pytest.raises(StorageAccessDenied) as caught:
        adapter.object_size(key)  # HEAD: a bare 403
    assert_no_secret(caught.value, SECRET)
    sink = adapter.open_object(key)
    with pytest.raises(StorageAccessDenied) as caught:
        sink.write(b"\0" * (MIN_PART_SIZE + 1))
    assert_no_secret(caught.value, SECRET)
    assert SECRET not in repr(adapter) and SECRET not in repr(adapter.store)


def test_unknown_access_key_is_access_denied(flavor, moto_server, s3_bucket):
    adapter = make_adapter(flavor, moto_server, s3_bucket, key_id="AKIANOSUCHKEY0000000", secret=SECRET)
    with pytest.raises(StorageAccessDenied) as caught:
        probe(adapter)
    assert caught.value.vendor_code == "InvalidAccessKeyId"
    assert_no_secret(caught.value, SECRET, "AKIANOSUCHKEY0000000")


def test_unreachable_endpoint_is_unavailable_quickly(flavor, moto_server, s3_bucket, closed_port):
    adapter = make_adapter(flavor, moto_server, s3_bucket, endpoint=f"http://127.0.0.1:{closed_port}",
                           secret=SECRET)
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as caught:
        probe(adapter)
    assert time.monotonic() - started < 5
    assert caught.value.retryable
    assert_no_secret(caught.value, SECRET)


# configuration, no network


def target(vendor: int, **kwargs) -> StorageTarget:
    kwargs.setdefault("access_key_id", "AKID")
    kwargs.setdefault("access_key_secret", "secret")
    return StorageTarget(vendor, kwargs.pop("bucket", "bucket"), **kwargs)


def test_vendor_1_uses_aws_endpoint_and_checksums():
    store = adapter_for(target(1, region="eu-west-1")).store
    config = store._s3.meta.config
    assert store._s3.meta.endpoint_url == "https://s3.eu-west-1.amazonaws.com"
    assert config.request_checksum_calculation == "when_supported"
    assert config.retries["total_max_attempts"] == 1 and config.connect_timeout <= 10
    assert store.url("a/b.mp4") == "https://bucket.s3.eu-west-1.amazonaws.com/a/b.mp4"
    dotted = adapter_for(target(1, bucket="my.bucket", region="eu-west-1")).store
    assert dotted.url("k") == "https://s3.eu-west-1.amazonaws.com/my.bucket/k"


def test_non_aws_endpoints_checksum_only_when_required():
    for store in (adapter_for(target(10, endpoint="minio.example.com:9000")).store,
                  adapter_for(target(3, region="ap-guangzhou")).store,
                  adapter_for(target(1, region="us-east-1"), "http://127.0.0.1:9").store):
        config = store._s3.meta.config
        assert config.request_checksum_calculation == "when_required"
        assert config.response_checksum_validation == "when_required"


def test_vendor_10_path_style_on_its_endpoint():
    store = adapter_for(target(10, endpoint="minio.example.com:9000/", bucket="media")).store
    assert store._s3.meta.endpoint_url == "https://minio.example.com:9000"
    assert store._s3.meta.config.s3["addressing_style"] == "path"
    assert store.url("x/y.flv") == "https://minio.example.com:9000/media/x/y.flv"
    # an override routes the requests, FileUrl stays the user's endpoint
    routed = adapter_for(target(10, endpoint="https://minio.example.com", bucket="media"),
                         "http://127.0.0.1:9000").store
    assert routed._s3.meta.endpoint_url == "http://127.0.0.1:9000"
    assert routed.url("k") == "https://minio.example.com/media/k"


def test_vendor_3_cos_endpoint():
    store = adapter_for(target(3, region="ap-shanghai", bucket="media-1250000000")).store
    assert store._s3.meta.endpoint_url == "https://cos.ap-shanghai.myqcloud.com"
    assert store._s3.meta.config.s3["addressing_style"] == "virtual"
    assert store.url("k.aac") == "https://media-1250000000.cos.ap-shanghai.myqcloud.com/k.aac"


@pytest.mark.parametrize("bad", [
    target(10),                                   # no EndPoint
    target(3),                                    # no Region
    target(1, region="us-east-1.evil.example"),   # not a region name
])
def test_incomplete_parameters_are_refused(bad):
    with pytest.raises(StorageError):
        adapter_for(bad)


@pytest.mark.parametrize("vendor", [1, 3, 10])
def test_credentials_are_required(vendor):
    with pytest.raises(StorageAccessDenied):
        adapter_for(target(vendor, region="ap-guangzhou", endpoint="https://x.example", access_key_secret=""))


def test_invalid_keys_are_refused(adapter):
    for bad in ["", "/abs", "a\nb", "x" * 1025]:
        with pytest.raises(InvalidObjectKey):
            adapter.open_object(bad)
