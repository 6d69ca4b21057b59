"""The signed API and the publishing endpoint, over real HTTP against a real node."""

import os
import stat
import time

import pytest

from testkit.node import APP_ID, SERVER_SECRET, NodeProcess, http, start_record_body
from testkit.ports import free_port, free_udp_range
from testkit.rtp import PublisherSpec, offer_sdp

STORAGE_SECRET = start_record_body("r")["StorageParams"]["AccessKeySecret"]


def test_every_action_answers_in_the_envelope(node):
    task_id = node.ok("StartRecord", start_record_body("api-room"))["TaskId"]
    unknown = "Z" * 16
    for action, body, code in [
        ("DescribeRecordStatus", {"TaskId": task_id}, 0), ("DescribeTasks", {"Status": 2}, 0),
        ("PauseRecord", {"TaskId": task_id}, 0), ("PauseRecord", {"TaskId": task_id}, 300000004),  # paused already
        ("ResumeRecord", {"TaskId": task_id}, 0), ("ResumeRecord", {"TaskId": task_id}, 300001004),  # running
        ("DescribeRecordStatus", {"TaskId": unknown}, 300001000), ("StopRecord", {"TaskId": unknown}, 300001000),
        ("StartRecord", {"RoomId": "api-room"}, 300000004),
        ("StopRecord", {"TaskId": task_id}, 0), ("StopRecord", {"TaskId": task_id}, 300001001),  # ended
        ("PauseRecord", {"TaskId": task_id}, 300001001), ("ResumeRecord", {"TaskId": task_id}, 300001001),
    ]:
        answer = node.call(action, body)
        assert set(answer) == {"Code", "Message", "RequestId", "Data"}, (action, answer)
        assert (action, answer["Code"]) == (action, code), answer
        assert answer["RequestId"] and (answer["Message"] == "succeed") == (code == 0), answer  # the hosted words


@pytest.mark.parametrize("query, code", [
    ({"Signature": None}, 100000009),
    ({"Signature": "0" * 32}, 100000005),
    ({"Timestamp": str(int(time.time()) - 30)}, 100000005),  # signed for another time
    ({"AppId": "nope"}, 100000001),
    ({"SignatureNonce": None}, 100000008),
    ({"Timestamp": None}, 100000002),
    ({"Timestamp": "x"}, 100000003),
    ({"SignatureVersion": None}, 100000013),
    ({"SignatureVersion": "3.0"}, 100000014),
    ({"Action": None}, 100000006),
    ({"Action": "MixRecord"}, 100000007),
])
def test_signature_problems(node, query, code):
    answer = node.call("DescribeTasks", {"Status": 2}, query=query)
    assert answer["Code"] == code, answer


def test_expired_and_replayed(node):
    assert node.call("DescribeTasks", {"Status": 2}, timestamp=int(time.time()) - 601)["Code"] == 100000004
    assert node.call("DescribeTasks", {"Status": 2}, timestamp=int(time.time()) + 601)["Code"] == 100000004
    assert node.call("DescribeTasks", {"Status": 2}, secret="wrong")["Code"] == 100000005
    assert node.call("DescribeTasks", {"Status": 2}, app_id=APP_ID + 1)["Code"] == 100000005
    nonce = os.urandom(8).hex()
    assert node.call("DescribeTasks", {"Status": 2}, nonce=nonce)["Code"] == 0
    replay = node.call("DescribeTasks", {"Status": 2}, nonce=nonce)
    assert replay["Code"] == 100000005 and "already used" in replay["Message"]


def test_unreadable_body(node):
    from engine.auth import sign

    nonce, ts = os.urandom(8).hex(), int(time.time())
    url = (f"{node.base_url}/?Action=DescribeTasks&AppId={APP_ID}&SignatureNonce={nonce}&Timestamp={ts}"
           f"&Signature={sign(APP_ID, nonce, SERVER_SECRET, ts)}&SignatureVersion=2.0")
    answer = http("POST", url, b"{not json", {"Content-Type": "application/json"})
    assert answer.status == 200 and answer.json()["Code"] == 100000012


@pytest.mark.parametrize("change, message", [
    (lambda b: b["RecordInputParams"].update(RecordMode=2), "mixed-stream recording is not supported"),
    (lambda b: b["RecordInputParams"].update(MaxIdleTime=1), "RecordInputParams.MaxIdleTime"),
    (lambda b: b["StorageParams"].update(Vendor=5), "StorageParams.Vendor 5 (Alibaba VOD) is not supported"),
    (lambda b: b["StorageParams"].update(Vendor=6), "StorageParams.Vendor 6 (Tencent VOD) is not supported"),
    (lambda b: b["StorageParams"].update(Vendor=12), "StorageParams.Vendor must be between"),
    (lambda b: b["StorageParams"].update(Bucket="../etc"), "StorageParams.Bucket"),
    (lambda b: b["RecordOutputParams"].update(OutputFolder="../../x/"), "RecordOutputParams.OutputFolder"),
    (lambda b: b.update(RoomId="x" * 129), "RoomId must be 1 to 128 bytes"),
])
def test_bad_start_record_names_the_field(node, change, message):
    body = start_record_body("bad-room")
    change(body)
    answer = node.call("StartRecord", body)
    assert answer["Code"] == 300000004 and message in answer["Message"], answer
    assert STORAGE_SECRET not in str(answer)


def test_task_errors(node):
    assert node.call("StopRecord", {"TaskId": "A" * 16})["Code"] == 300001000
    assert node.call("DescribeRecordStatus", {"TaskId": "A" * 16})["Code"] == 300001000
    # a hosted-style id ('-' in it) that names no task on this node: not found, not malformed
    for action in ("StopRecord", "DescribeRecordStatus", "PauseRecord", "ResumeRecord"):
        assert node.call(action, {"TaskId": "YRHu6-E4IyvEAAAD"})["Code"] == 300001000, action
    assert node.call("StopRecord", {"TaskId": "short"})["Code"] == 300000004
    task_id = node.ok("StartRecord", start_record_body("stop-twice"))["TaskId"]
    node.ok("StopRecord", {"TaskId": task_id})
    assert node.call("StopRecord", {"TaskId": task_id})["Code"] == 300001001


def test_client_task_id_returns_the_same_task(node):
    body = {**start_record_body("client-room"), "ClientTaskId": "my-job-1"}
    first = node.ok("StartRecord", body)["TaskId"]
    assert node.ok("StartRecord", body)["TaskId"] == first


def test_describe_tasks_groups_and_pages(node):
    room = f"page-room-{os.getpid()}"
    ids = [node.ok("StartRecord", start_record_body(room))["TaskId"] for _ in range(5)]
    node.ok("StopRecord", {"TaskId": ids[0]})
    running = node.ok("DescribeTasks", {"Status": 2, "RoomId": room, "PageSize": 3})
    assert running["TotalCount"] == 4 and len(running["TaskList"]) == 3
    page2 = node.ok("DescribeTasks", {"Status": 2, "RoomId": room, "PageSize": 3, "PageOffset": 2})
    page0 = node.ok("DescribeTasks", {"Status": 2, "RoomId": room, "PageSize": 3, "PageOffset": 0})
    assert page0["PageOffset"] == 1 and page0["TaskList"] == running["TaskList"]  # 0 means page 1
    listed = [t["TaskId"] for t in running["TaskList"] + page2["TaskList"]]
    assert sorted(listed) == sorted(ids[1:])
    assert all(t["Status"] == 2 and t["RoomId"] == room for t in running["TaskList"])
    ended = node.ok("DescribeTasks", {"Status": 3, "RoomId": room})
    assert [t["TaskId"] for t in ended["TaskList"]] == [ids[0]]
    later = int(time.time() * 1000) + 60_000
    assert node.ok("DescribeTasks", {"Status": 2, "RoomId": room, "StartTime": later,
                                      "EndTime": later + 1000})["TotalCount"] == 0
    for task_id in ids[1:]:
        node.ok("StopRecord", {"TaskId": task_id})


@pytest.mark.parametrize("sdp, status, reason", [
    ("hello", 400, "must start with v=0"),
    ("v=0\r\nm=video 9 RTP/AVP 97\r\na=rtpmap:97 VP8/90000\r\n", 400, "offers no H264"),
    ("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n", 400, "unsupported transport"),
])
def test_malformed_sdp_is_refused_with_a_reason(node, sdp, status, reason):
    answer = node.publish("sdp-room", "s", sdp)
    assert answer.status == status and reason in answer.body.decode()


def test_publish_checks_ids_content_type_and_duplicates(node):
    sdp = offer_sdp(PublisherSpec(), True, True)
    assert node.publish("room with space", "s", sdp).status == 400
    url = f"{node.base_url}/rtp/dup-room/s1"
    assert http("POST", url, sdp.encode(), {"Content-Type": "text/plain"}).status == 415
    first = node.publish("dup-room", "s1", sdp)
    assert first.status == 201
    assert node.publish("dup-room", "s1", sdp).status == 409
    assert node.unpublish(first.headers["Location"]).status == 200
    assert node.unpublish(first.headers["Location"]).status == 404


def test_identifiers_with_unsafe_characters_round_trip(node):
    sdp = offer_sdp(PublisherSpec(), True, True)
    answer = node.publish("a/b#c", "s<1>", sdp, user_id="u%1")
    assert answer.status == 201, answer
    stats = node.stream_stats(answer.headers["Location"])
    assert (stats["RoomId"], stats["StreamId"], stats["UserId"]) == ("a/b#c", "s<1>", "u%1")
    node.unpublish(answer.headers["Location"])


def test_health(node):
    assert http("GET", node.base_url + "/healthz").json() == {"status": "ok"}
    assert http("GET", node.base_url + "/readyz").status == 200


def test_bearer_token_guards_publishing(tmp_path):
    token = "ingest-token-5d1a"
    guarded = NodeProcess(tmp_path / "data", free_port(), free_udp_range(20), tmp_path / "node.log",
                          extra_env={"RECNODE_INGEST_TOKEN": token}).start()
    try:
        sdp = offer_sdp(PublisherSpec(), True, True)
        assert guarded.publish("r", "s", sdp).status == 401
        assert guarded.publish("r", "s", sdp, headers={"Authorization": "Bearer wrong"}).status == 401
        ok = guarded.publish("r", "s", sdp, headers={"Authorization": f"Bearer {token}"})
        assert ok.status == 201
        assert guarded.unpublish(ok.headers["Location"]).status == 401
        assert guarded.unpublish(ok.headers["Location"], {"Authorization": f"Bearer {token}"}).status == 200
    finally:
        guarded.stop()
    assert token not in guarded.logs()


def test_no_secret_leaks_anywhere(node):
    """Server secret and storage credentials: never in logs, answers, or a worker's
    command line or environment; the store is mode 0600."""
    sdp = offer_sdp(PublisherSpec(), True, True)
    published = node.publish("secret-room", "s", sdp)
    task_id = node.ok("StartRecord", start_record_body("secret-room"))["TaskId"]
    answers = [node.call("DescribeRecordStatus", {"TaskId": task_id}), node.call("DescribeTasks", {"Status": 2})]
    pid = node.stream_stats(published.headers["Location"])["WorkerPid"]
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = f.read()
    with open(f"/proc/{pid}/environ", "rb") as f:
        environ = f.read()
    node.ok("StopRecord", {"TaskId": task_id})
    node.unpublish(published.headers["Location"])
    store = node.data_dir / "recnode.sqlite3"
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    for secret in (SERVER_SECRET, STORAGE_SECRET):
        assert secret.encode() not in cmdline
        assert secret.encode() not in environ
        assert all(secret not in str(a) for a in answers)
        assert secret not in node.logs()
    assert b"RECNODE_SERVER_SECRET" not in environ
    assert task_id in node.logs()  # the log is the node's, and it is being written
