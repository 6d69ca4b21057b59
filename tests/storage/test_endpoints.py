"""Where each S3-protocol vendor's requests go, as boto3 really sends them: the
request is built and signed by the adapter's own client and stopped just before
it would leave the machine (botocore's before-send event), so no network is used.
The vendors against a real server (moto over HTTP) are in test_s3.py."""

from __future__ import annotations

import re

import pytest

from contract.storage import StorageTarget
from storage_adapters.base import StorageError
from storage_adapters.s3 import S3Store
from storage_adapters.vendors import adapter_for


class Sent(Exception):
    """Raised by the before-send hook: the request is built and signed, and goes nowhere."""

    def __init__(self, request):
        super().__init__("captured")
        self.request = request


def store_for(vendor: int, region: str = "", endpoint: str = "", bucket: str = "media") -> S3Store:
    target = StorageTarget(vendor, bucket, region=region, endpoint=endpoint, access_key_id="AKID",
                           access_key_secret="secret")
    store = adapter_for(target).store
    assert isinstance(store, S3Store)
    return store


def sent_put(store: S3Store, key: str = "rec/a_VA.mp4") -> tuple[str, str]:
    """(URL, signed-for region) of a PutObject the store's client would send."""
    def stop(request, **_):
        raise Sent(request)

    store._s3.meta.events.register_first("before-send.s3.PutObject", stop)
    with pytest.raises(Sent) as sent:
        store._s3.put_object(Bucket=store.bucket, Key=key, Body=b"x")
    request = sent.value.request
    scope = re.search(r"Credential=[^/]+/\d{8}/([^/]+)/s3/aws4_request", request.headers["Authorization"].decode())
    return request.url, scope.group(1)


# Vendor, Region, EndPoint, Bucket -> the URL requests go to (also the FileUrl), the region they are signed for
CASES = [
    # 3 Tencent COS: cos.<Region>.myqcloud.com, bucket in the host name
    (3, "ap-shanghai", "", "media-1250000000", "https://media-1250000000.cos.ap-shanghai.myqcloud.com", "ap-shanghai"),
    # 4 Qiniu Kodo: s3.<Region>.qiniucs.com (path or virtual-hosted; virtual, as its URLs are)
    (4, "cn-east-1", "", "media", "https://media.s3.cn-east-1.qiniucs.com", "cn-east-1"),
    (4, "z2", "", "media", "https://media.s3.cn-south-1.qiniucs.com", "cn-south-1"),  # Kodo's zone id, South China
    # 7 Huawei OBS: obs.<Region>.myhuaweicloud.com, bucket in the host name
    (7, "cn-north-4", "", "media", "https://media.obs.cn-north-4.myhuaweicloud.com", "cn-north-4"),
    # EndPoint: a domain the pattern lacks
    (7, "eu-west-101", "obs.eu-west-101.myhuaweicloud.eu", "media",
     "https://media.obs.eu-west-101.myhuaweicloud.eu", "eu-west-101"),
    # a dotted bucket: by path (a TLS wildcard covers one label)
    (7, "cn-north-4", "", "my.media", "https://obs.cn-north-4.myhuaweicloud.com/my.media", "cn-north-4"),
    # 8 Google Cloud Storage: its XML API, HMAC keys, scope `auto`
    (8, "", "", "media", "https://storage.googleapis.com/media", "auto"),
    (8, "us-central1", "", "media", "https://storage.googleapis.com/media", "auto"),
    # 9 China Mobile EOS: eos-<Region>.cmecloud.cn, by path
    (9, "wuxi1", "", "media", "https://eos-wuxi-1.cmecloud.cn/media", "us-east-1"),  # EOS's location name
    (9, "eos-beijing-2", "", "media", "https://eos-beijing-2.cmecloud.cn/media", "us-east-1"),
    (9, "yunnan", "", "media", "https://eos-yunnan.cmecloud.cn/media", "us-east-1"),
    # 10 on OSS (the hosted service's example: Region oss-...): virtual-hosted, which OSS requires
    (10, "oss-cn-hangzhou", "https://oss-cn-hangzhou.aliyuncs.com", "media",
     "https://media.oss-cn-hangzhou.aliyuncs.com", "oss-cn-hangzhou"),
    # by its domain alone
    (10, "", "s3.oss-cn-beijing.aliyuncs.com", "media", "https://media.s3.oss-cn-beijing.aliyuncs.com", "us-east-1"),
    # by its Region alone
    (10, "oss-cn-shanghai", "https://gateway.example.com", "media", "https://media.gateway.example.com",
     "oss-cn-shanghai"),
    # COS through Vendor 10
    (10, "", "https://cos.ap-guangzhou.myqcloud.com", "media-1250000000",
     "https://media-1250000000.cos.ap-guangzhou.myqcloud.com", "us-east-1"),
    # 10 anywhere else: by path (MinIO, Ceph and most gateways know no bucket host names)
    (10, "", "https://minio.example.com:9000", "media", "https://minio.example.com:9000/media", "us-east-1"),
]


@pytest.mark.parametrize("vendor, region, endpoint, bucket, bucket_url, signed_for", CASES,
                         ids=[f"{c[0]}-{c[1] or c[2]}-{c[3]}" for c in CASES])
def test_each_vendor_region_and_endpoint(vendor, region, endpoint, bucket, bucket_url, signed_for):
    store = store_for(vendor, region, endpoint, bucket)
    assert sent_put(store, "rec/a_VA.mp4") == (bucket_url + "/rec/a_VA.mp4", signed_for)
    assert store.url("rec/a_VA.mp4") == bucket_url + "/rec/a_VA.mp4"  # FileUrl: where it was put
    # none of them takes boto3's default trailing checksums
    assert store._s3.meta.config.request_checksum_calculation == "when_required"


@pytest.mark.parametrize("vendor, name, example", [(3, "Tencent COS", "ap-guangzhou"), (4, "Qiniu Kodo", "cn-east-1"),
                                                   (7, "Huawei OBS", "cn-north-4"), (9, "China Mobile EOS", "wuxi-1")])
def test_a_vendor_that_needs_region_says_so(vendor, name, example):
    with pytest.raises(StorageError, match=rf"Vendor {vendor} \({name}\) needs Region, e.g. {example}"):
        store_for(vendor)


@pytest.mark.parametrize("vendor", [3, 4, 7, 9])
def test_a_region_that_is_no_region_name_is_refused(vendor):
    with pytest.raises(StorageError, match="is not a region name"):
        store_for(vendor, "cn-north-4.evil.example")


def test_the_node_override_routes_requests_by_path_and_keeps_the_public_url():
    target = StorageTarget(7, "media", region="cn-north-4", access_key_id="AKID", access_key_secret="secret")
    store = adapter_for(target, "http://127.0.0.1:9000").store
    assert sent_put(store) == ("http://127.0.0.1:9000/media/rec/a_VA.mp4", "cn-north-4")
    assert store.url("rec/a_VA.mp4") == "https://media.obs.cn-north-4.myhuaweicloud.com/rec/a_VA.mp4"
