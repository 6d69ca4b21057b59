"""Pulling from a WHEP server: a real node subscribes to the test WHEP server (aiortc in
its own process, sending the test clip's encoded frames as they are) and records it
like a published stream."""

from __future__ import annotations

import signal
import time

import pytest

from testkit import bitstream, probe
from testkit.media import make_test_media
from testkit.node import NodeProcess, http, start_record_body
from testkit.ports import free_port, free_udp_range
from testkit.whep import ServerSpec, read_record, start_server
from tests.e2e.media_checks import recorded_path
from tests.e2e.publishing import stop_and_describe
from tests.e2e.pulling import clip_slices, pull, pull_ok, source_state, wait_source, workers

CLIP_S = 4.0
RECORDED_FRAMES = 75  # taken from a session before it is ended: 2.5 s of the clip, more than the files need
TOKEN = "whep-bearer-5e1d"
SECRET_PATH = "cam-secret-path-7c4a"


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    base = tmp_path_factory.mktemp("pull-whep")
    process = NodeProcess(base / "data", free_port(), free_udp_range(), base / "node.log",
                          extra_args=("--test-limits",)).start()
    yield process
    process.stop()


@pytest.fixture
def servers(tmp_path):
    """Start WHEP servers (own processes) on demand; every one is gone after the test."""
    started = []

    def start(port: int | None = None, **options):
        spec = ServerSpec(port=port or free_port(), record=str(tmp_path / f"server-{len(started)}.json"),
                          clip_s=CLIP_S, **options)
        process = start_server(spec)
        started.append(process)
        return spec, process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def whep_body(spec: ServerSpec, **extra) -> dict:
    return {"Url": f"http://127.0.0.1:{spec.port}{spec.path}", "Kind": "whep", **extra}


def chunks_of_clip(got: list[bytes]) -> list[list[bytes]]:
    """Split recorded slices where the clip starts over (each session, and each loop, starts
    at frame 0), checking that every piece is the clip's from its first frame on."""
    once = clip_slices(CLIP_S, loops=1)
    starts = [i for i, nal in enumerate(got) if nal == once[0]] + [len(got)]
    assert starts[0] == 0, "the recording does not start on the clip's first frame"
    pieces = [got[a:b] for a, b in zip(starts, starts[1:])]
    for piece in pieces:
        assert piece == once[:len(piece)]
    return pieces


def video_frames(state: dict) -> int:
    """Video frames the node has taken from the source's current session."""
    return state.get("Stats", {}).get("video", {}).get("frames", 0)


def test_pulled_stream_is_recorded_exactly_and_ended_with_delete(node, servers):
    room = "pull-exact"
    spec, _ = servers()
    task_id = node.ok("StartRecord", start_record_body(room))["TaskId"]
    location = pull_ok(node, room, "cam", whep_body(spec))
    live = wait_source(location, lambda s: s["State"] == "live", timeout=15)
    assert [t["Codec"] for t in live["Tracks"]] == ["H264", "opus"] and live["Attempts"] == 1
    # one and a half loops of the clip (30 fps) taken by the node, however long a busy machine needs
    state = wait_source(location, lambda s: s["Stats"]["video"]["frames"] >= 1.5 * CLIP_S * 30)
    assert state["Stats"]["video"]["lost"] == 0
    deleted = http("DELETE", location)
    assert deleted.status == 200 and deleted.json()["State"] == "stopped"
    assert read_record(spec.record).deletes == ["/whep/cam/session/0"]  # the session ended on the server
    data = stop_and_describe(node, task_id)
    [entry] = data["RecordFiles"]
    assert entry["UserId"] == "u-cam" and entry["StreamId"] == "cam" and entry["MediaTrackType"] == 3
    path = recorded_path(node, entry)
    report = probe.decode_all(path)
    assert report.errors == () and (report.video_codec, report.audio_codec) == ("h264", "opus")
    got = bitstream.h264_slice_nals_from_file(path)
    assert len(got) >= 170 and len(chunks_of_clip(got)) == 2  # every frame, as the server sent it
    assert report.video_frames == len(got)
    media = make_test_media(duration_s=CLIP_S)
    sent_audio = [p.data for p in media.audio[:round(CLIP_S * 50)]] * 3
    got_audio = bitstream.opus_packets_from_file(path)
    assert len(got_audio) > 250 and got_audio == sent_audio[1:1 + len(got_audio)]  # from the first key frame on
    offsets = probe.av_offsets(path)  # the clip beeps when the picture flashes
    assert len(offsets) >= 5 and max(abs(o) for o in offsets) <= 0.020, offsets
    assert http("GET", location).json()["State"] == "stopped"
    assert workers(node) == 0


@pytest.mark.parametrize("fill_blank", [False, True])
def test_server_gone_and_back(node, servers, fill_blank):
    """The server vanishes (SIGKILL: no DELETE, no BYE) and comes back on the same port:
    the source retries, the stream rejoins its room like a republish."""
    room = f"pull-back-{fill_blank}"
    spec, server = servers()
    task_id = node.ok("StartRecord", start_record_body(room, FillBlank=fill_blank, MaxIdleTime=30))["TaskId"]
    location = pull_ok(node, room, "cam", whep_body(spec))
    wait_source(location, lambda s: video_frames(s) >= RECORDED_FRAMES, timeout=15)
    server.send_signal(signal.SIGKILL)
    server.wait()
    gone = time.monotonic()
    down = wait_source(location, lambda s: s["State"] == "retrying", timeout=15)
    assert down["Drops"] == 1 and down["LastError"].startswith("dropped: inactive: ")
    assert down["Tracks"] == [] and "Stats" not in down
    time.sleep(1.0)
    servers(spec.port)  # the same URL answers again
    back = wait_source(location, lambda s: s["State"] == "live", timeout=40)
    away_s = time.monotonic() - gone
    assert back["Connects"] == 2 and back["Attempts"] >= 3
    wait_source(location, lambda s: video_frames(s) >= RECORDED_FRAMES)  # counted anew for the new session
    assert http("DELETE", location).status == 200
    data = stop_and_describe(node, task_id)
    paths = [recorded_path(node, f) for f in data["RecordFiles"]]
    assert len(paths) == (1 if fill_blank else 2)
    pieces = []
    for path in paths:
        report = probe.decode_all(path)
        assert report.errors == () and report.video_frames > 60
        pieces += chunks_of_clip(bitstream.h264_slice_nals_from_file(path))
    assert len(pieces) == 2  # two sessions, each recorded from the clip's first frame
    if fill_blank:
        report = probe.decode_all(paths[0])
        gaps = [b - a for a, b in zip(report.video_pts_s, report.video_pts_s[1:])]
        assert max(gaps) >= away_s - 4.0  # the time away stays in the file's timeline
        assert abs(report.audio_duration_s - report.video_duration_s) < 0.2  # silence filled the gap
    for path in paths:
        offsets = probe.av_offsets(path)
        assert offsets and max(abs(o) for o in offsets) <= 0.020, offsets


def test_redirect_is_followed_with_the_token_and_secrets_stay_secret(node, servers):
    room = "pull-redirect"
    second, _ = servers(token=TOKEN, path=f"/whep/{SECRET_PATH}")
    first, _ = servers(token=TOKEN, redirect_to=f"http://127.0.0.1:{second.port}{second.path}")
    task_id = node.ok("StartRecord", start_record_body(room))["TaskId"]
    location = pull_ok(node, room, "cam", whep_body(first, BearerToken=TOKEN))
    live = wait_source(location, lambda s: s["State"] == "live", timeout=15)
    node.wait_task(task_id, lambda d: d["RecordFiles"] and d["RecordFiles"][0]["FileSize"] > 0)  # media recorded
    assert http("DELETE", location).status == 200
    redirecting, answering = read_record(first.record), read_record(second.record)
    assert (redirecting.posts, redirecting.sessions) == (1, 0)
    assert answering.sessions == 1 and answering.deletes == [f"{second.path}/session/0"]
    assert set(redirecting.authorization + answering.authorization) == {f"Bearer {TOKEN}"}
    [entry] = stop_and_describe(node, task_id)["RecordFiles"]
    assert probe.decode_all(recorded_path(node, entry)).video_frames > 0
    text = str(live) + str(source_state(location)) + node.logs()
    assert TOKEN not in text and SECRET_PATH not in text and str(second.port) not in text


def test_refused_and_failing_sources(node, servers, closed_port):
    room = "pull-bad"
    url = f"http://127.0.0.1:{closed_port}/whep/cam"
    for body, field in [({"Url": url}, "Kind"), ({"Kind": "whep"}, "Url"), ({"Url": url, "Kind": "srt"}, "Kind"),
                        ({"Url": "ftp://127.0.0.1/x", "Kind": "whep"}, "Url"),
                        ({"Url": "rtsp://127.0.0.1/x", "Kind": "whep"}, "Url"),
                        ({"Url": "http://127.0.0.1/x", "Kind": "rtsp"}, "Url"),
                        ({"Url": "http:///x", "Kind": "whep"}, "Url"),
                        ({"Url": "http://169.254.169.254/latest", "Kind": "whep"}, "Url"),
                        ({"Url": url, "Kind": "whep", "Transport": "udp"}, "Transport"),
                        ({"Url": "rtsp://127.0.0.1/x", "Kind": "rtsp", "Transport": "quic"}, "Transport"),
                        ({"Url": "rtsp://127.0.0.1/x", "Kind": "rtsp", "BearerToken": "t"}, "BearerToken")]:
        answer = pull(node, room, "cam", body)
        assert answer.status == 400 and answer.body.decode().startswith(field), (body, answer)
    assert "network this node refuses" in pull(node, room, "cam", {"Url": "http://169.254.169.254/x",
                                                                     "Kind": "whep"}).body.decode()
    assert pull(node, "bad room!", "cam", {"Url": url, "Kind": "whep"}).status == 400

    # nobody listens: retried with a growing wait, the reason in the state
    refused = pull_ok(node, room, "cam", {"Url": url, "Kind": "whep"})
    state = wait_source(refused, lambda s: s["Attempts"] >= 3 and s["State"] == "retrying", timeout=20)
    assert state["LastError"] == "WHEP request failed: cannot connect: Connection refused", state["LastError"]
    assert state["NextAttemptIn"] is not None and state["Connects"] == 0
    # the stream id is taken: not by a second pull, not by a publisher
    assert pull(node, room, "cam", {"Url": url, "Kind": "whep"}).status == 409
    whip = http("POST", f"{node.base_url}/whip/{room}/cam", b"v=0\r\n", {"Content-Type": "application/sdp"})
    assert whip.status == 409 and b"pulled" in whip.body
    assert http("DELETE", refused).status == 200

    # a server whose answer is not SDP
    spec, _ = servers(garbage_answer=True)
    garbage = pull_ok(node, room, "cam", whep_body(spec))
    state = wait_source(garbage, lambda s: s["Attempts"] >= 2 and s["State"] == "retrying", timeout=20)
    assert "SDP answer" in state["LastError"], state["LastError"]
    assert len(read_record(spec.record).deletes) >= 1  # the session it created is ended each time
    assert http("DELETE", garbage).status == 200
    assert http("GET", garbage).json()["State"] == "stopped"
    assert http("GET", f"{node.base_url}/pull/source/nope").status == 404
    deadline = time.monotonic() + 10
    while workers(node) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert workers(node) == 0  # nothing leaks
    assert http("GET", node.base_url + "/readyz").status == 200


def test_pull_of_a_published_stream_and_the_ingest_token(tmp_path, servers):
    node = NodeProcess(tmp_path / "data", free_port(), free_udp_range(20), tmp_path / "n.log",
                       extra_env={"RECNODE_INGEST_TOKEN": "ingest-3f1"}).start()
    try:
        spec, _ = servers()
        body = whep_body(spec)
        assert pull(node, "r", "cam", body).status == 401
        auth = {"Authorization": "Bearer ingest-3f1"}
        offer = (b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                 b"m=audio 9 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n")
        assert node.publish("r", "pushed", offer.decode(), headers=auth).status == 201
        taken = pull(node, "r", "pushed", body, headers=auth)
        assert taken.status == 409 and b"already published" in taken.body
        created = pull(node, "r", "cam", body, headers=auth)
        assert created.status == 201
        location = created.headers["Location"]
        assert http("GET", location).status == 401 and http("DELETE", location).status == 401
        assert http("GET", location, headers=auth).json()["RoomId"] == "r"
        assert http("DELETE", location, headers=auth).status == 200
    finally:
        node.stop()
