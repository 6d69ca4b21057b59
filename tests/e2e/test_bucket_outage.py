"""A bucket outage while a recording's parts fall due: the node retries and the
object ends up complete.

The node reaches moto's S3 server through a TCP proxy that takes the bucket away
in one of two ways: it refuses (open connections reset, new ones refused) or it
hangs (connections accepted, nothing answered, for longer than the S3 client's
read timeout). The stream is fast enough (about 20 Mb/s) that several 5 MiB parts
fall due while the bucket is away, and the outage begins only once a multipart
upload is under way, so it hits the upload in the middle."""

import json
import time

import pytest

from storage_adapters.multipart import MIN_PART_SIZE
from storage_adapters.s3 import READ_TIMEOUT
from testkit.node import NodeProcess
from testkit.ports import free_port, free_udp_range
from testkit.rtp import ClipSpec, PublisherSpec, wait_manifest
from tests.e2e.publishing import publish, run_publisher
from tests.e2e.test_storage import check_file, fetch_s3, s3_body, stop_until_uploaded
from tests.helpers.tcp_proxy import TcpProxy

FAST = ClipSpec(width=640, height=360, bitrate_kbps=16000)  # ~2.5 MB/s: a 5 MiB part about every 2 s
PARTS_DUE_IN_OUTAGE = 2


@pytest.fixture(scope="module")
def proxy(moto_server):
    server = TcpProxy(moto_server.port)
    yield server
    server.close()


@pytest.fixture(scope="module")
def outage_node(tmp_path_factory, proxy):
    base = tmp_path_factory.mktemp("outage-node")
    process = NodeProcess(base / "data", free_port(), free_udp_range(20), base / "node.log",
                          extra_args=("--storage-endpoint", f"1={proxy.endpoint}")).start()
    yield process
    process.stop()


def upload_retries(node, key):
    """The node's `upload_retry` log lines for one object key."""
    lines = (json.loads(line) for line in node.logs().splitlines() if line.startswith("{"))
    return [line for line in lines if line.get("event") == "upload_retry" and line.get("key") == key]


def wait_for(what, predicate, timeout, step=0.1):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(step)
    return value


def parts_in_bucket(client, bucket, prefix):
    for upload in client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []):
        parts = client.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]).get("Parts", [])
        if parts:
            return upload["Key"], len(parts)
    return None


def file_size(node, task_id):
    files = node.ok("DescribeRecordStatus", {"TaskId": task_id})["RecordFiles"]
    return files[0]["FileSize"] if files else 0


@pytest.mark.parametrize("kind, duration_s", [("refuse", 14.0), ("hang", 14.0)])
def test_an_outage_while_parts_fall_due_is_retried_and_loses_nothing(outage_node, proxy, moto_server, s3_bucket,
                                                                      tmp_path, kind, duration_s):
    room = f"outage-{kind}"
    client = moto_server.client()  # straight to moto, not through the proxy
    spec = PublisherSpec(duration_s=duration_s, clip=FAST, loop_clip_s=2.0)
    location, targets = publish(outage_node, room, "cam", spec)
    body = s3_body(room, moto_server, s3_bucket)
    task_id = outage_node.ok("StartRecord", body)["TaskId"]
    process, spec = run_publisher(spec, targets, tmp_path)
    try:
        key, parts_before = wait_for("the first part in the bucket", lambda: parts_in_bucket(client, s3_bucket, f"{room}/"),
                          timeout=20)
        resets_before, gave_up_before = proxy.reset, proxy.gave_up
        if kind == "refuse":  # in the middle of a part's upload: it is reset, and every retry refused
            wait_for("a part in flight", lambda: proxy.open_connections, timeout=20, step=0.002)
            proxy.refuse()
        else:
            proxy.hang()
        before = file_size(outage_node, task_id)
        wait_for("parts falling due in the outage",
                 lambda: file_size(outage_node, task_id) - before >= PARTS_DUE_IN_OUTAGE * MIN_PART_SIZE, timeout=20)
        if kind == "refuse":
            wait_for("retries", lambda: len(upload_retries(outage_node, key)) >= 2, timeout=10)
        else:  # the client gives up on an unanswered request only after its read timeout
            wait_for("the read timeout", lambda: proxy.gave_up > gave_up_before, timeout=READ_TIMEOUT + 10)
        parts_during = parts_in_bucket(client, s3_bucket, f"{room}/")
    finally:
        proxy.restore()
    manifest = wait_manifest(spec.manifest_path, proc=process)
    outage_node.unpublish(location)
    data, _ = stop_until_uploaded(outage_node, task_id)

    [entry] = data["RecordFiles"]
    assert key.endswith("/" + entry["FileId"])  # FileId is the bare name; the key has OutputFolder before it
    retries = upload_retries(outage_node, key)
    assert retries and all(r["error"] == "StorageUnavailable" and r["retryable"] for r in retries), retries
    if kind == "refuse":
        assert proxy.reset > resets_before and len(retries) >= 2
    else:
        assert len(retries) >= 1
    assert parts_during[1] <= parts_before + 1  # nothing got through but the part in flight
    # complete: the bucket's object is every byte the worker wrote, in as many parts as that makes
    report = check_file(outage_node, body, entry, lambda k: fetch_s3(moto_server, s3_bucket, k), tmp_path)
    assert report.video_frames == round(duration_s * FAST.fps) == len(manifest.frames("video"))
    etag = client.head_object(Bucket=s3_bucket, Key=key)["ETag"].strip('"')
    assert int(etag.rsplit("-", 1)[1]) == -(-entry["FileSize"] // MIN_PART_SIZE) >= 1 + PARTS_DUE_IN_OUTAGE
