"""Vendor 2 (Alibaba Cloud OSS): the real oss2 client against tests/helpers/oss_server.py,
which checks OSS V1 signatures with its own implementation."""

from __future__ import annotations

import email.utils
import hashlib
import random
import time
import urllib.error
import urllib.request
import uuid

import oss2
import pytest

from contract.storage import StorageTarget
from storage_adapters.base import (
    StorageAccessDenied,
    StorageError,
    StorageNotFound,
    StorageUnavailable,
    UploadNotFound,
)
from storage_adapters.multipart import MIN_PART_SIZE, MultipartSink, ObjectStoreAdapter, probe
from storage_adapters.oss import OssStore
from storage_adapters.vendors import adapter_for
from tests.conftest import OSS_BUCKET, OSS_KEY_ID, OSS_SECRET
from tests.helpers.oss_server import sign, string_to_sign
from tests.storage.test_s3 import SECRET, assert_no_secret, uneven_chunks

MiB = 1024 * 1024


def make_adapter(server, bucket: str = OSS_BUCKET, *, secret: str = OSS_SECRET, key_id: str = OSS_KEY_ID,
                 endpoint: str | None = None) -> ObjectStoreAdapter:
    target = StorageTarget(2, bucket, region="cn-hangzhou", access_key_id=key_id, access_key_secret=secret)
    adapter = adapter_for(target, endpoint or server.endpoint)
    assert isinstance(adapter, ObjectStoreAdapter) and isinstance(adapter.store, OssStore)
    return adapter


@pytest.fixture
def adapter(oss_server) -> ObjectStoreAdapter:
    return make_adapter(oss_server)


@pytest.fixture
def key() -> str:
    return f"rec/{uuid.uuid4().hex}_VA.mp4"


@pytest.fixture
def reader(oss_server) -> oss2.Bucket:
    """oss2 itself, to read back what the adapter wrote."""
    return oss2.Bucket(oss2.Auth(OSS_KEY_ID, OSS_SECRET), oss_server.endpoint, OSS_BUCKET)


def test_large_object_streams_as_multipart_and_matches(adapter, oss_server, reader, key):
    data = random.Random(3).randbytes(12 * MiB + 777)
    sink = adapter.open_object(key)
    assert isinstance(sink, MultipartSink)
    seen_before_close = None
    for chunk in uneven_chunks(data, seed=11):
        sink.write(chunk)
        if seen_before_close is None and sink.size > 6 * MiB:
            # the first part is on the server while the object is still being written
            parts = oss_server.uploads[sink.upload_id].parts
            seen_before_close = {number: len(part.data) for number, part in parts.items()}
    assert seen_before_close == {1: MIN_PART_SIZE}
    info = sink.close()
    assert info.size == len(data) and info.sha256 == hashlib.sha256(data).hexdigest()
    stored = reader.get_object(key)
    body = stored.read()
    assert hashlib.sha256(body).hexdigest() == info.sha256 and body == data
    assert stored.etag.endswith("-3") and stored.headers["Content-Type"] == "video/mp4"
    assert adapter.object_size(key) == len(data)
    assert reader.list_multipart_uploads().upload_list == []


def test_small_object_is_one_put(adapter, reader, key):
    data = b"tiny\x00" * 333
    sink = adapter.open_object(key)
    for chunk in uneven_chunks(data):
        sink.write(chunk)
    info = sink.close()
    assert sink.upload_id is None
    assert reader.get_object(key).read() == data and info.sha256 == hashlib.sha256(data).hexdigest()
    assert reader.head_object(key).object_type == "Normal"


def test_abort_leaves_no_object_and_no_pending_upload(adapter, oss_server, reader, key):
    sink = adapter.open_object(key)
    sink.write(random.Random(4).randbytes(5 * MiB + 1))
    assert [u.upload_id for u in reader.list_multipart_uploads(prefix=key).upload_list] == [sink.upload_id]
    sink.abort()
    assert sink.abort_error is None
    assert adapter.object_size(key) is None and not reader.object_exists(key)
    assert reader.list_multipart_uploads(prefix=key).upload_list == [] and oss_server.pending_uploads(OSS_BUCKET) == []


def test_put_head_delete(adapter, key):
    store = adapter.store
    assert store.head(key) is None
    store.put(key, b"abcdef")
    assert store.head(key) == 6
    store.delete(key)
    assert store.head(key) is None
    store.delete(key)


def test_unknown_upload_id_is_upload_not_found(adapter, key):
    for call in (lambda: adapter.store.upload_part(key, "NOSUCHUPLOAD", 1, b"x"),
                 lambda: adapter.store.complete(key, "NOSUCHUPLOAD", [(1, '"X"')]),
                 lambda: adapter.store.abort(key, "NOSUCHUPLOAD")):
        with pytest.raises(UploadNotFound):
            call()


def test_complete_checks_etags(adapter, key):
    store = adapter.store
    upload_id = store.begin(key)
    store.upload_part(key, upload_id, 1, b"x" * 10)
    with pytest.raises(StorageError) as caught:
        store.complete(key, upload_id, [(1, '"0123456789ABCDEF0123456789ABCDEF"')])
    assert caught.value.vendor_code == "InvalidPart"
    store.abort(key, upload_id)


def test_url_form(oss_server):
    adapter = make_adapter(oss_server)
    assert adapter.object_url("rec/a b.mp4") == f"https://{OSS_BUCKET}.oss-cn-hangzhou.aliyuncs.com/rec/a%20b.mp4"


def test_probe(adapter):
    result = probe(adapter, "out")
    assert result is not None and result.readable and result.deleted and result.key.startswith("out/recnode-probe-")
    assert adapter.object_size(result.key) is None


def test_missing_bucket_is_not_found(oss_server):
    adapter = make_adapter(oss_server, "no-such-bucket")
    with pytest.raises(StorageNotFound) as caught:
        probe(adapter)
    assert caught.value.vendor_code == "NoSuchBucket"
    with pytest.raises(StorageNotFound):
        adapter.object_size("k")  # HEAD: OSS names the missing thing in x-oss-err


def test_wrong_secret_is_signature_does_not_match(oss_server, key):
    adapter = make_adapter(oss_server, secret=SECRET)
    with pytest.raises(StorageAccessDenied) as caught:
        probe(adapter)
    assert caught.value.vendor_code == "SignatureDoesNotMatch" and caught.value.http_status == 403
    assert "SignatureDoesNotMatch" in str(caught.value)
    assert_no_secret(caught.value, SECRET, OSS_SECRET, OSS_KEY_ID)
    with pytest.raises(StorageAccessDenied) as caught:
        adapter.object_size(key)
    assert_no_secret(caught.value, SECRET)
    sink = adapter.open_object(key)
    with pytest.raises(StorageAccessDenied) as caught:
        sink.write(b"\0" * (MIN_PART_SIZE + 1))
    assert_no_secret(caught.value, SECRET)
    assert SECRET not in repr(adapter) and SECRET not in repr(adapter.store)


def test_unknown_access_key_is_denied(oss_server):
    with pytest.raises(StorageAccessDenied) as caught:
        probe(make_adapter(oss_server, key_id="LTAI-nobody", secret=SECRET))
    assert caught.value.vendor_code == "InvalidAccessKeyId"
    assert_no_secret(caught.value, SECRET, "LTAI-nobody")


def test_server_errors_are_unavailable(adapter, oss_server, key):
    oss_server.fail_with = (503, "ServiceUnavailable")
    try:
        with pytest.raises(StorageUnavailable) as caught:
            adapter.store.put(key, b"x")
    finally:
        oss_server.fail_with = None
    assert caught.value.retryable and caught.value.http_status == 503


def test_unreachable_endpoint_is_unavailable_quickly(oss_server, closed_port):
    adapter = make_adapter(oss_server, endpoint=f"http://127.0.0.1:{closed_port}", secret=SECRET)
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as caught:
        probe(adapter)
    assert time.monotonic() - started < 5
    assert_no_secret(caught.value, SECRET)


def test_server_checks_signatures_itself(oss_server):
    """The test server's verifier, driven without oss2: a request signed by hand
    is accepted, the same request with a header changed after signing is not."""
    date = email.utils.formatdate(usegmt=True)
    headers = {"date": date, "content-type": "text/plain", "x-oss-meta-note": "hand-signed"}
    text = string_to_sign("PUT", headers, OSS_BUCKET, "hand/signed.txt", [])
    assert text == f"PUT\n\ntext/plain\n{date}\nx-oss-meta-note:hand-signed\n/{OSS_BUCKET}/hand/signed.txt"

    def put(note: str) -> int:
        request = urllib.request.Request(f"{oss_server.endpoint}/{OSS_BUCKET}/hand%2Fsigned.txt", data=b"hi",
                                         method="PUT", headers={
                                             "Date": date, "Content-Type": "text/plain", "x-oss-meta-note": note,
                                             "Authorization": f"OSS {OSS_KEY_ID}:{sign(OSS_SECRET, text)}"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    assert put("hand-signed") == 200
    assert put("tampered") == 403
    assert oss_server.object(OSS_BUCKET, "hand/signed.txt") == b"hi"


def test_oss_endpoint_and_url_without_override():
    target = StorageTarget(2, "media", region="oss-cn-shanghai", access_key_id="a", access_key_secret="s")
    store = adapter_for(target).store
    assert store.endpoint == "https://oss-cn-shanghai.aliyuncs.com"
    assert store.url("k.flv") == "https://media.oss-cn-shanghai.aliyuncs.com/k.flv"
    internal = adapter_for(StorageTarget(2, "media", region="cn-shanghai",
                                         endpoint="oss-cn-shanghai-internal.aliyuncs.com",
                                         access_key_id="a", access_key_secret="s")).store
    assert internal.endpoint == "https://oss-cn-shanghai-internal.aliyuncs.com"
    assert internal.url("k") == "https://media.oss-cn-shanghai.aliyuncs.com/k"  # FileUrl: the public form
    with pytest.raises(StorageError):
        adapter_for(StorageTarget(2, "media", access_key_id="a", access_key_secret="s"))  # no Region, no EndPoint
    with pytest.raises(StorageAccessDenied):
        adapter_for(StorageTarget(2, "media", region="cn-shanghai"))
