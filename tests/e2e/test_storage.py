"""Recording into buckets: moto's S3 server and a signature-checking OSS server,
real HTTP, the node's spool and uploader, a killed node (outages: test_bucket_outage.py)."""

import hashlib
import io
import sqlite3
import time
from urllib.parse import unquote

import av
import pytest

from testkit import probe
from testkit.node import NodeProcess, start_record_body
from testkit.ports import free_port, free_udp_range
from testkit.rtp import ClipSpec, PublisherSpec, offer_sdp, parse_answer, wait_manifest
from tests.conftest import OSS_BUCKET, OSS_KEY_ID, OSS_SECRET
from tests.e2e.conftest import CALLBACK_SECRET
from tests.e2e.publishing import publish, run_publisher

DURABLE_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def bucket_node(tmp_path_factory, moto_server, s3_bucket, oss_server):
    base = tmp_path_factory.mktemp("bucket-node")
    process = NodeProcess(base / "data", free_port(), free_udp_range(), base / "node.log",
                          extra_env={"RECNODE_CALLBACK_SECRET": CALLBACK_SECRET},
                          extra_args=storage_args(moto_server, oss_server)).start()
    yield process
    process.stop()


S3_PROTOCOL_VENDORS = (1, 3, 4, 7, 8, 9)  # served by the S3 adapter (and 10, at the caller's EndPoint)


def storage_args(moto_server, oss_server):
    # Vendor 10 takes the caller's EndPoint: moto on loopback, which the operator allows here
    overrides = [arg for vendor in S3_PROTOCOL_VENDORS
                 for arg in ("--storage-endpoint", f"{vendor}={moto_server.endpoint}")]
    return (*overrides, "--storage-endpoint", f"2={oss_server.endpoint}", "--storage-endpoint-allow", "127.0.0.0/8")


def s3_body(room, moto_server, bucket, fmt="mp4", stream_type=3, **storage):
    body = start_record_body(room)
    body["RecordInputParams"]["StreamType"] = stream_type
    body["RecordOutputParams"].update(OutputFileFormat=fmt, OutputFolder=f"{room}/{fmt}/", FragmentSeconds=2,
                                      ShortFragmentPath=True)
    body["StorageParams"] = {"Vendor": 1, "Region": "us-east-1", "Bucket": bucket,
                             "AccessKeyId": moto_server.access_key_id,
                             "AccessKeySecret": moto_server.access_key_secret, **storage}
    return body


def stored_sha256(node, file_id):
    with sqlite3.connect(f"file:{node.data_dir / 'recnode.sqlite3'}?mode=ro", uri=True) as db:
        return db.execute("SELECT sha256 FROM files WHERE file_id=?", (file_id,)).fetchone()[0]


def fetch_s3(moto_server, bucket, key):
    return moto_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()


def object_key(body, entry):
    """Where a hosted client finds a file in its bucket: its OutputFolder, then FileId."""
    return body["RecordOutputParams"]["OutputFolder"] + entry["FileId"]


def check_file(node, body, entry, fetch, tmp_path):
    """The bucket's object is what the worker wrote, and it decodes (HLS: with its segments)."""
    key = object_key(body, entry)
    data = fetch(key)
    assert hashlib.sha256(data).hexdigest() == stored_sha256(node, key)
    assert entry["FileUrl"].startswith(("https://", "http://")) and entry["FileUrl"].endswith(key)
    local = tmp_path / entry["FileId"]
    local.write_bytes(data)
    if entry["OutputFileFormat"] == "hls":  # decoded here from the bucket's objects (the URLs name no host here)
        lines = data.decode().splitlines()
        local.write_text("".join(line.rsplit("/", 1)[-1] + "\n" for line in lines))
        output = body["RecordOutputParams"]
        bare = output.get("ShortFragmentPath") and output.get("RealtimeUploadFragment")
        segments = [line for line in lines if line and not line.startswith("#")]
        assert segments
        for line in segments:
            # bare names beside the playlist, or each segment's full URL in FileUrl's form
            assert ("/" not in line) if bare else line.rsplit("/", 1)[0] == entry["FileUrl"].rsplit("/", 1)[0], line
            name = unquote(line.rsplit("/", 1)[-1])
            (tmp_path / name).write_bytes(fetch(output["OutputFolder"] + name))
    report = probe.decode_all(local)
    assert report.errors == () and (report.video_frames or report.audio_frames)
    return report


def record(node, room, bodies, spec, tmp_path, during=None):
    location, targets = publish(node, room, "cam", spec)
    tasks = [node.ok("StartRecord", b)["TaskId"] for b in bodies]
    process, spec = run_publisher(spec, targets, tmp_path)
    if during is not None:
        during(tasks)
    manifest = wait_manifest(spec.manifest_path, proc=process)
    node.unpublish(location)
    return tasks, manifest


def stop_until_uploaded(node, task_id, timeout=DURABLE_TIMEOUT_S):
    node.ok("StopRecord", {"TaskId": task_id})
    stopped = time.monotonic()
    data = node.wait_task(task_id, lambda d: d["RecordFiles"] and all(f["Status"] == 3 for f in d["RecordFiles"]),
                          timeout=timeout)
    return data, time.monotonic() - stopped


def test_every_format_lands_in_s3_and_decodes(bucket_node, moto_server, s3_bucket, receiver, tmp_path):
    bodies = [s3_body("s3-all", moto_server, s3_bucket, fmt, st) for fmt, st in (("mp4", 3), ("flv", 4), ("hls", 3))]
    bodies[2]["RecordOutputParams"].update(RealtimeUploadFragment=True, CallbackUrl=receiver.url)
    bodies.append(s3_body("s3-all", moto_server, s3_bucket, "mp4", 3, Vendor=3, Region="ap-guangzhou"))
    bodies.append(s3_body("s3-all", moto_server, s3_bucket, "hls", 3))  # playlist at the end, segments by URL
    bodies[4]["RecordOutputParams"].update(OutputFolder="s3-all/hls-urls/", ShortFragmentPath=False)
    live = []

    def while_recording(tasks):  # after event 102, the bucket holds an EVENT playlist of segments it has
        receiver.wait_for(tasks[2], lambda e: 102 in e)
        [entry] = bucket_node.ok("DescribeRecordStatus", {"TaskId": tasks[2]})["RecordFiles"]
        folder = bodies[2]["RecordOutputParams"]["OutputFolder"].rstrip("/")  # FileId is the bare name
        live.append(fetch_s3(moto_server, s3_bucket, f"{folder}/{entry['FileId']}").decode())
        live.extend(fetch_s3(moto_server, s3_bucket, f"{folder}/{line.rsplit('/', 1)[-1]}")[:1].hex()
                    for line in live[0].splitlines() if line and not line.startswith("#"))

    tasks, _ = record(bucket_node, "s3-all", bodies, PublisherSpec(duration_s=5.0), tmp_path, during=while_recording)
    playlist, *segments = live
    assert "#EXT-X-PLAYLIST-TYPE:EVENT\n" in playlist and "#EXT-X-ENDLIST" not in playlist, playlist
    assert segments and all(first == "47" for first in segments)  # MPEG-TS sync bytes: the segments are there
    for task_id, body in zip(tasks, bodies, strict=True):
        data, _ = stop_until_uploaded(bucket_node, task_id)
        for entry in data["RecordFiles"]:
            check_file(bucket_node, body, entry, lambda k: fetch_s3(moto_server, s3_bucket, k), tmp_path)
    assert [len(bucket_node.ok("DescribeRecordStatus", {"TaskId": t})["RecordFiles"]) for t in tasks] == [1, 2, 1, 1, 1]
    # the HLS task's playlist reached the bucket while recording: event 102, before the end events
    events = receiver.wait_for(tasks[2], lambda e: e[-3:] == [7, 1, 5])
    types = [r.body["event_type"] for r in events]
    assert types.count(102) >= 1 and set(types[:-3]) == {102}
    assert all(r.signature_ok for r in events)


# Vendor, Region and the FileUrl prefix each gets (moto stands in for every vendor's endpoint)
VENDOR_URLS = [
    (4, "ap-southeast-1", "https://{bucket}.s3.ap-southeast-1.qiniucs.com/"),  # Qiniu Kodo
    (7, "ap-southeast-1", "https://{bucket}.obs.ap-southeast-1.myhuaweicloud.com/"),  # Huawei OBS
    (8, "", "https://storage.googleapis.com/{bucket}/"),  # Google Cloud Storage
    (9, "wuxi1", "https://eos-wuxi-1.cmecloud.cn/{bucket}/"),  # China Mobile EOS
]


def test_each_s3_protocol_vendor_records_into_its_bucket(bucket_node, moto_server, s3_bucket, tmp_path):
    bodies = [s3_body("s3-vendors", moto_server, s3_bucket, Vendor=vendor, Region=region)
              for vendor, region, _ in VENDOR_URLS]
    for body, (vendor, _, _) in zip(bodies, VENDOR_URLS, strict=True):
        body["RecordOutputParams"]["OutputFolder"] = f"s3-vendors/{vendor}/"
    tasks, _ = record(bucket_node, "s3-vendors", bodies, PublisherSpec(duration_s=2.0), tmp_path)
    for task_id, body, (_, _, url) in zip(tasks, bodies, VENDOR_URLS, strict=True):
        data, _ = stop_until_uploaded(bucket_node, task_id)
        [entry] = data["RecordFiles"]
        check_file(bucket_node, body, entry, lambda k: fetch_s3(moto_server, s3_bucket, k), tmp_path)
        assert entry["FileUrl"] == url.format(bucket=s3_bucket) + object_key(body, entry)


def test_parts_reach_the_bucket_before_stop_record(bucket_node, moto_server, s3_bucket, tmp_path):
    client = moto_server.client()
    seen_parts = []

    def watch(tasks):
        deadline = time.monotonic() + 30
        while not seen_parts and time.monotonic() < deadline:
            for upload in client.list_multipart_uploads(Bucket=s3_bucket, Prefix="s3-parts/").get("Uploads", []):
                parts = client.list_parts(Bucket=s3_bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                seen_parts.extend(p["Size"] for p in parts.get("Parts", []))
            time.sleep(0.2)

    # Vendor 10 (any S3-protocol service) with its EndPoint, and a >= 8 Mbps stream
    body = s3_body("s3-parts", moto_server, s3_bucket, Vendor=10, EndPoint=moto_server.endpoint)
    spec = PublisherSpec(duration_s=10.0, clip=ClipSpec(width=640, height=360, bitrate_kbps=9000))
    [task_id], manifest = record(bucket_node, "s3-parts", [body], spec, tmp_path, during=watch)
    assert seen_parts and all(size >= 5 * 1024 * 1024 for size in seen_parts)
    data, took = stop_until_uploaded(bucket_node, task_id)
    [entry] = data["RecordFiles"]
    assert entry["FileSize"] > 8 * 1024 * 1024
    report = check_file(bucket_node, body, entry, lambda k: fetch_s3(moto_server, s3_bucket, k), tmp_path)
    assert report.video_frames == 300
    assert entry["FileUrl"].startswith(moto_server.endpoint)  # Vendor 10: the user's own endpoint


def test_output_folder_without_a_slash_is_a_folder(bucket_node, moto_server, s3_bucket, tmp_path):
    """As in the hosted service `rec` means `rec/`; the probe went (and went away) there too."""
    body = s3_body("s3-folder", moto_server, s3_bucket)
    body["RecordOutputParams"]["OutputFolder"] = "s3-folder"
    [task_id], _ = record(bucket_node, "s3-folder", [body], PublisherSpec(duration_s=2.0), tmp_path)
    data, _ = stop_until_uploaded(bucket_node, task_id)
    [entry] = data["RecordFiles"]
    listing = moto_server.client().list_objects_v2(Bucket=s3_bucket, Prefix="s3-folder")
    assert [o["Key"] for o in listing["Contents"]] == [f"s3-folder/{entry['FileId']}"]
    assert entry["FileUrl"] == f"https://{s3_bucket}.s3.us-east-1.amazonaws.com/s3-folder/{entry['FileId']}"


def test_uploads_pending_when_the_node_is_killed_finish_after_restart(moto_server, oss_server, s3_bucket, tmp_path):
    data_dir = tmp_path / "data"
    first = NodeProcess(data_dir, free_port(), free_udp_range(20), tmp_path / "a.log",
                        extra_args=storage_args(moto_server, oss_server)).start()
    body = s3_body("s3-restart", moto_server, s3_bucket)
    try:
        [task_id], _ = record(first, "s3-restart", [body], PublisherSpec(duration_s=3.0), tmp_path)
        moto_server.pause()
        first.ok("StopRecord", {"TaskId": task_id})
        [entry] = first.ok("DescribeRecordStatus", {"TaskId": task_id})["RecordFiles"]
        assert entry["Status"] == 2  # uploading: the bucket does not answer
        first.process.kill()
        first.process.wait(10)
    finally:
        moto_server.resume() if first.process.poll() is None else None
    moto_server.pause()
    second = NodeProcess(data_dir, free_port(), free_udp_range(20), tmp_path / "b.log",
                         extra_args=storage_args(moto_server, oss_server)).start()
    try:
        assert second.ok("DescribeRecordStatus", {"TaskId": task_id})["RecordFiles"][0]["Status"] == 2
        moto_server.resume()
        data = second.wait_task(task_id, lambda d: d["RecordFiles"][0]["Status"] == 3, timeout=DURABLE_TIMEOUT_S)
        check_file(second, body, data["RecordFiles"][0], lambda k: fetch_s3(moto_server, s3_bucket, k), tmp_path)
        assert not any((data_dir / "spool").iterdir())
    finally:
        moto_server.resume()
        second.stop()


def test_oss_with_signed_requests(bucket_node, oss_server, tmp_path):
    body = start_record_body("oss-room")
    body["StorageParams"] = {"Vendor": 2, "Region": "cn-hangzhou", "Bucket": OSS_BUCKET,
                             "AccessKeyId": OSS_KEY_ID, "AccessKeySecret": OSS_SECRET}
    [task_id], _ = record(bucket_node, "oss-room", [body], PublisherSpec(duration_s=3.0), tmp_path)
    data, _ = stop_until_uploaded(bucket_node, task_id)
    [entry] = data["RecordFiles"]
    assert entry["FileUrl"].startswith(f"https://{OSS_BUCKET}.oss-cn-hangzhou.aliyuncs.com/")
    check_file(bucket_node, body, entry, lambda k: oss_server.object(OSS_BUCKET, k), tmp_path)
    wrong = {**body, "StorageParams": {**body["StorageParams"], "AccessKeySecret": "not-the-secret"}}
    answer = bucket_node.call("StartRecord", wrong)
    assert answer["Code"] == 300000004 and "refused the credentials" in answer["Message"]


@pytest.mark.parametrize("change, message", [
    ({"AccessKeySecret": "wrong-secret"}, "refused the credentials"),
    ({"Bucket": "no-such-bucket"}, "no such bucket"),
    ({"Vendor": 10, "EndPoint": "http://127.0.0.1:9"}, "cannot be reached"),
])
def test_storage_problems_are_refused_at_start_record(bucket_node, moto_server, s3_bucket, change, message):
    body = s3_body("s3-bad", moto_server, s3_bucket, **change)
    answer = bucket_node.call("StartRecord", body)
    assert answer["Code"] == 300000004 and message in answer["Message"], answer
    assert moto_server.access_key_secret not in str(answer)


def test_storage_secrets_leak_nowhere(bucket_node, moto_server, s3_bucket):
    published = bucket_node.publish("s3-secret", "s", offer_sdp(PublisherSpec(), True, True))
    task_id = bucket_node.ok("StartRecord", s3_body("s3-secret", moto_server, s3_bucket))["TaskId"]
    pid = bucket_node.stream_stats(published.headers["Location"])["WorkerPid"]
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = f.read()
    with open(f"/proc/{pid}/environ", "rb") as f:
        environ = f.read()
    answer = bucket_node.call("DescribeRecordStatus", {"TaskId": task_id})
    bucket_node.ok("StopRecord", {"TaskId": task_id})
    bucket_node.unpublish(published.headers["Location"])
    for secret in (moto_server.access_key_secret, OSS_SECRET):
        assert secret.encode() not in cmdline and secret.encode() not in environ
        assert secret not in str(answer) and secret not in bucket_node.logs()
    spool = bucket_node.data_dir / "spool"
    assert oct(spool.stat().st_mode & 0o777) == "0o700"


def test_a_full_spool_fails_clearly(moto_server, oss_server, s3_bucket, receiver, tmp_path):
    node = NodeProcess(tmp_path / "data", free_port(), free_udp_range(20), tmp_path / "n.log",
                       extra_env={"RECNODE_CALLBACK_SECRET": CALLBACK_SECRET},
                       extra_args=(*storage_args(moto_server, oss_server), "--spool-max-bytes", str(2 * 1024 * 1024)))
    node.start()
    try:
        moto_server.pause()  # nothing leaves the spool: it fills up
        body = s3_body("s3-full", moto_server, s3_bucket)
        body["RecordOutputParams"]["CallbackUrl"] = receiver.url
        moto_server.resume()  # (StartRecord's probe needs the bucket)
        spec = PublisherSpec(duration_s=6.0, clip=ClipSpec(width=640, height=360, bitrate_kbps=9000))
        location, targets = publish(node, "s3-full", "cam", spec)
        task_id = node.ok("StartRecord", body)["TaskId"]
        moto_server.pause()
        process, spec = run_publisher(spec, targets, tmp_path)
        data = node.wait_task(task_id, lambda d: d["Status"] == 4, timeout=30)
        moto_server.resume()
        [entry] = data["RecordFiles"]
        node.wait_task(task_id, lambda d: d["RecordFiles"][0]["Status"] == 5, timeout=30)
        got = receiver.wait_for(task_id, lambda e: e[-2:] == [2, 1], timeout=60)
        assert [r.body["event_type"] for r in got] == [2, 1]
        assert got[0].body["detail"]["quit_reason"] == 1004 and got[1].body["detail"]["upload_status"] == 2
        assert "spool is full" in node.logs()
        wait_manifest(spec.manifest_path, proc=process)
        node.unpublish(location)
        assert node.ok("DescribeTasks", {"Status": 3, "RoomId": "s3-full"})["TaskList"][0]["Status"] == 4
    finally:
        moto_server.resume()
        node.stop()


# jpg: pictures whose flashes the clip puts on every whole second, key frames every 3 s
PICTURE_CLIP = ClipSpec(keyint=90, flash_period_s=1.0, flash_offset_s=0.0)


def test_pictures_for_a_bucket_are_announced_once_it_holds_them(bucket_node, moto_server, s3_bucket, receiver,
                                                                  tmp_path):
    """S3 (moto): a picture goes through the node's spool and uploader; its event 1 comes
    when the bucket holds it, with the bucket's URL."""
    spec = PublisherSpec(duration_s=6.0, clip=PICTURE_CLIP)
    answer = bucket_node.publish("pictures-s3", "cam", offer_sdp(spec, True, True), user_id="u-cam")
    body = s3_body("pictures-s3", moto_server, s3_bucket, fmt="jpg")
    body["RecordOutputParams"].update(SnapshotInterval=5, CallbackUrl=receiver.url)
    task_id = bucket_node.ok("StartRecord", body)["TaskId"]
    process, spec = run_publisher(spec, parse_answer(answer.body.decode()), tmp_path)
    wait_manifest(spec.manifest_path, proc=process)
    bucket_node.ok("StopRecord", {"TaskId": task_id})
    events = [r.body["event_type"] for r in receiver.wait_for(task_id, lambda events: 5 in events)]
    assert sorted(events) == [1, 1, 5, 7] and events[-1] == 5  # the end waits for the pictures' uploads
    for info in [r.body["detail"]["file_info"][0] for r in receiver.of_task(task_id) if r.body["event_type"] == 1]:
        key = body["RecordOutputParams"]["OutputFolder"].rstrip("/") + "/" + info["file_id"]  # file_id: the name
        data = moto_server.client().get_object(Bucket=s3_bucket, Key=key)["Body"].read()
        assert len(data) == info["file_size"] and info["file_url"].startswith("http")
        assert info["file_url"].endswith(key) and info["status"] == 3
        with av.open(io.BytesIO(data)) as container:
            assert next(container.decode(video=0)).to_ndarray(format="gray").mean() > 200  # the flashes, 0 and 5 s
    bucket_node.unpublish(answer.headers["Location"])
