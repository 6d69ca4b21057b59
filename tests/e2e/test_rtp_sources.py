"""Trust boundaries of plain-RTP ingest through a real node: stray, hostile and
restarting senders on real sockets, the pinned source, and offers with values a
worker would trip over (refused at the announce, no worker started)."""

from __future__ import annotations

from http.client import HTTPConnection
import re
import socket
import struct
import threading
import time
import urllib.parse

import pytest

from testkit import bitstream, probe
from testkit.node import NodeProcess, http, start_record_body
from testkit.ports import free_port, free_udp_range
from testkit.rtp import PublisherSpec, TrackSpec, offer_sdp, parse_answer, wait_manifest
from testkit.rtp.plan import packetize_h264
from tests.e2e.media_checks import assert_opus_tail_equal, assert_slices_equal, recorded_path, sent_video_aus
from tests.e2e.publishing import publish, run_publisher, stop_and_describe
from tests.metrics_text import value

KINDS = ("video", "audio")


def _send_to_rtp_ports(targets, datagram_for_kind, count=1, host="127.0.0.1"):
    """From a socket of its own: `count` datagrams to each answered RTP port."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        for kind in KINDS:
            for i in range(count):
                sock.sendto(datagram_for_kind(kind, i), targets[kind][:2])


def _rtp(payload_type, seq, timestamp, ssrc, payload, marker=1):
    return struct.pack("!BBHII", 0x80, marker << 7 | payload_type, seq & 0xFFFF, timestamp, ssrc) + payload


def _record_exactly(node, tmp_path, room, spec, location, targets):
    task_id = node.ok("StartRecord", start_record_body(room))["TaskId"]
    process, spec = run_publisher(spec, targets, tmp_path)
    manifest = wait_manifest(spec.manifest_path, proc=process)
    stats = node.stream_stats(location)["Tracks"]
    [entry] = stop_and_describe(node, task_id)["RecordFiles"]
    node.unpublish(location)
    path = recorded_path(node, entry)
    assert probe.decode_all(path).errors == ()
    assert_slices_equal(path, sent_video_aus(manifest))
    assert_opus_tail_equal(path, manifest)
    return stats


def test_a_stray_datagram_before_the_publisher_takes_nothing(node, tmp_path):
    spec = PublisherSpec(duration_s=3.0)
    location, targets = publish(node, "room-stray", "cam", spec)
    _send_to_rtp_ports(targets, lambda kind, i: b"hello")
    stats = _record_exactly(node, tmp_path, "room-stray", spec, location, targets)
    assert all(stats[kind]["garbage"] == 1 and stats[kind]["foreign"] == 0 for kind in KINDS)


def test_valid_rtp_of_another_payload_type_before_the_publisher_is_ignored(node, tmp_path):
    spec = PublisherSpec(duration_s=3.0)
    location, targets = publish(node, "room-wrong-pt", "cam", spec)
    clip = spec.media()
    payloads = {"video": packetize_h264(clip.video[0].data)[0], "audio": clip.audio[0].data}
    wrong_pt = {"video": 97, "audio": 112}
    _send_to_rtp_ports(targets, lambda kind, i: _rtp(wrong_pt[kind], i, 3000 * i, 4242, payloads[kind]), count=20)
    stats = _record_exactly(node, tmp_path, "room-wrong-pt", spec, location, targets)
    assert all(stats[kind]["garbage"] == 20 and stats[kind]["foreign"] == 0 for kind in KINDS)


def test_a_hijacker_of_a_live_stream_is_counted_and_ignored(node, tmp_path):
    """Valid RTP of the offer, with the publisher's own SSRCs and real key frames, from
    another socket while the publisher sends: none of it reaches the file."""
    spec = PublisherSpec(duration_s=4.0, video=TrackSpec(96, ssrc=1001), audio=TrackSpec(111, ssrc=1002))
    location, targets = publish(node, "room-hijack", "cam", spec)
    clip = spec.media()
    forged = {"video": packetize_h264(clip.video[0].data)[-1], "audio": clip.audio[0].data}
    ssrcs = {"video": 1001, "audio": 1002}
    sent = []

    def hijack():
        deadline = time.monotonic() + 15
        while node.stream_stats(location)["Tracks"]["video"]["frames"] < 15:  # the publisher is followed
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for i in range(50):
            _send_to_rtp_ports(targets, lambda kind, _: _rtp(spec.track(kind).payload_type, 30_000 + i, 90_000 * i,
                                                             ssrcs[kind], forged[kind]))
            sent.append(i)
            time.sleep(0.02)

    thread = threading.Thread(target=hijack)
    thread.start()
    stats = _record_exactly(node, tmp_path, "room-hijack", spec, location, targets)
    thread.join()
    assert len(sent) == 50
    assert all(stats[kind]["foreign"] == 50 and stats[kind]["source_changes"] == 0 for kind in KINDS)


def test_a_publisher_restarted_on_new_ports_is_followed_after_the_silence(node, tmp_path):
    """The first publisher stops; another process (new ports, new SSRCs and timestamps)
    takes over after RTP_SOURCE_SILENCE_S (2 s): both are in the file, in order."""
    spec = PublisherSpec(duration_s=2.0)
    location, targets = publish(node, "room-restart", "cam", spec)
    task_id = node.ok("StartRecord", start_record_body("room-restart"))["TaskId"]
    process, first_spec = run_publisher(spec, targets, tmp_path, name="first")
    first = wait_manifest(first_spec.manifest_path, proc=process)
    time.sleep(max(0.0, first.end_wall + 2.3 - time.time()))
    process, second_spec = run_publisher(spec, targets, tmp_path, name="second")
    second = wait_manifest(second_spec.manifest_path, proc=process)
    stats = node.stream_stats(location)["Tracks"]
    [entry] = stop_and_describe(node, task_id)["RecordFiles"]
    node.unpublish(location)

    assert first.local_ports["video_rtp"] != second.local_ports["video_rtp"]
    assert first.ssrcs["video"] != second.ssrcs["video"]
    assert all((stats[kind]["source_changes"], stats[kind]["ssrc_changes"]) == (1, 1) for kind in KINDS)
    path = recorded_path(node, entry)
    report = probe.decode_all(path)
    assert report.errors == ()
    assert_slices_equal(path, sent_video_aus(first) + sent_video_aus(second))
    sent_audio = [p.data for p in spec.media().audio]
    got = bitstream.opus_packets_from_file(path)
    assert got[-len(sent_audio):] == sent_audio and got[:-len(sent_audio)] == sent_audio[-(len(got) - len(sent_audio)):]
    gap = second.t0_wall - first.t0_wall  # the pause stays in the timeline
    assert abs(report.video_duration_s - (gap + spec.duration_s)) <= 0.15


def _publish_from(node, host, room, stream, sdp):
    """Announce over HTTP from a chosen local address (the announcer a pinned node sees)."""
    connection = HTTPConnection("127.0.0.1", node.port, timeout=30, source_address=(host, 0))
    try:
        connection.request("POST", f"/rtp/{urllib.parse.quote(room)}/{urllib.parse.quote(stream)}", body=sdp,
                           headers={"Content-Type": "application/sdp"})
        response = connection.getresponse()
        return response.status, response.getheader("Location"), response.read().decode()
    finally:
        connection.close()


def test_a_pinned_node_takes_media_from_the_announcers_host_only(tmp_path):
    pinned = NodeProcess(tmp_path / "data", free_port(), free_udp_range(20), tmp_path / "node.log",
                         extra_env={"RECNODE_RTP_PIN_SOURCE": "1"}).start()
    try:
        spec = PublisherSpec(duration_s=2.0)
        sdp = offer_sdp(spec, True, True)
        # announced from 127.0.0.2, sent from 127.0.0.1 (where the test publisher sends from)
        status, elsewhere, answer = _publish_from(pinned, "127.0.0.2", "room-pin", "other", sdp)
        assert status == 201
        task_id = pinned.ok("StartRecord", start_record_body("room-pin"))["TaskId"]
        process, _ = run_publisher(spec, parse_answer(answer), tmp_path, name="refused")
        assert process.wait(30) == 0
        tracks = pinned.stream_stats(elsewhere)["Tracks"]
        assert tracks["video"]["frames"] == 0 and tracks["video"]["foreign"] > 0
        assert tracks["audio"]["frames"] == 0 and tracks["audio"]["foreign"] > 0
        pinned.ok("StopRecord", {"TaskId": task_id})
        assert "RecordFiles" not in pinned.ok("DescribeRecordStatus", {"TaskId": task_id})  # ended with no file

        status, location, answer = _publish_from(pinned, "127.0.0.1", "room-pin-ok", "cam", sdp)
        assert status == 201
        _record_exactly(pinned, tmp_path, "room-pin-ok", spec, location, parse_answer(answer))
    finally:
        pinned.stop()


# values in the offer that a worker would trip over: refused at the announce

def _offer(video_rtpmap="96 H264/90000", audio_rtpmap="111 opus/48000/2", video_pt="96", fmtp=None):
    spec = PublisherSpec()
    text = offer_sdp(spec, True, True)
    text = text.replace("a=rtpmap:96 H264/90000", f"a=rtpmap:{video_rtpmap}")
    text = text.replace("a=rtpmap:111 opus/48000/2", f"a=rtpmap:{audio_rtpmap}")
    text = text.replace("m=video 9 RTP/AVP 96", f"m=video 9 RTP/AVP {video_pt}")
    if fmtp is not None:
        text = re.sub(r"a=fmtp:96 [^\r]*", f"a=fmtp:96 {fmtp}", text)
    return text


@pytest.mark.parametrize("sdp, line", [
    (_offer("96 H264/0", "111 opus/0/2"), "a=rtpmap:96 H264/0"),
    (_offer(audio_rtpmap="111 opus/0/2"), "a=rtpmap:111 opus/0/2"),
    (_offer("96 H264/1"), "a=rtpmap:96 H264/1"),
    (_offer("128 H264/90000", video_pt="128"), "m=video 9 RTP/AVP 128"),
    (_offer("300 H264/90000", video_pt="300"), "m=video 9 RTP/AVP 300"),
    (_offer(fmtp="packetization-mode=1;sprop-parameter-sets=not*base64,aMuMsg=="),
     "a=fmtp:96 packetization-mode=1;sprop-parameter-sets=not*base64,aMuMsg=="),
    (_offer(fmtp="packetization-mode=1;sprop-parameter-sets=ZWVlZQ=="),
     "a=fmtp:96 packetization-mode=1;sprop-parameter-sets=ZWVlZQ=="),
])
def test_a_bad_value_is_a_400_naming_its_line_and_starts_no_worker(node, sdp, line):
    def workers() -> int:
        metrics = http("GET", node.base_url + "/metrics").body.decode()
        return int(value(metrics, "recnode_workers"))

    before, logged = workers(), len(node.logs())
    answer = node.publish("room-bad-sdp", "cam", sdp)
    assert answer.status == 400 and repr(line) in answer.body.decode(), answer
    assert workers() == before
    assert "worker_start_failed" not in node.logs()[logged:] and "worker_ready" not in node.logs()[logged:]
    assert http("GET", node.base_url + "/healthz").status == 200
    good = node.publish("room-bad-sdp", "cam", offer_sdp(PublisherSpec(), True, True))
    assert good.status == 201
    assert node.unpublish(good.headers["Location"]).status == 200
