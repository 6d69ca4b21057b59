"""SRTP (SDES) ingest through a real node, with FFmpeg's own SRTP as the publisher."""

from __future__ import annotations

import base64
import re
import socket

from aiortc.rtp import RTCP_PSFB_PLI, RtcpPacket, RtcpPsfbPacket, RtcpSenderInfo, RtcpSrPacket
from pylibsrtp import Policy, Session

from testkit import bitstream, probe
from testkit.node import NodeProcess, http, start_record_body
from testkit.ports import free_port, free_udp_range
from testkit.rtp import ClipSpec, PublisherSpec, offer_sdp, parse_answer
from testkit.srtp import new_keys, srtp_offer, start_srtp_sender
from tests.e2e.media_checks import assert_slices_equal, recorded_path
from tests.e2e.publishing import stop_and_describe
from tests.e2e.test_crash import alive, node_on, wait_until

CRYPTO = re.compile(r"^a=crypto:(\d+) (\S+) inline:([A-Za-z0-9+/=]+)", re.M)


def _announce(node, room, spec, keys):
    answer = node.publish(room, "cam", srtp_offer(offer_sdp(spec, True, True), keys))
    assert answer.status == 201, answer
    text = answer.body.decode()
    assert text.count("RTP/SAVP") == 2
    return answer.headers["Location"], parse_answer(text), [base64.b64decode(k) for _, _, k in CRYPTO.findall(text)]


def _secrets(keys: dict[str, str], answer_keys: list[bytes]) -> list[str]:
    return [*keys.values(), *(base64.b64encode(k).decode() for k in answer_keys)]


def test_an_srtp_publisher_is_recorded_exactly_and_no_key_is_shown(node, tmp_path):
    spec = PublisherSpec(duration_s=3.0)
    keys = new_keys()
    location, targets, answer_keys = _announce(node, "room-srtp", spec, keys)
    assert len(answer_keys) == 2 and all(len(k) == 30 for k in answer_keys)
    assert not {base64.b64decode(k) for k in keys.values()} & set(answer_keys)  # the node's own keys
    task_id = node.ok("StartRecord", start_record_body("room-srtp"))["TaskId"]
    sender = start_srtp_sender(spec, targets, keys)
    assert sender.wait(30) == 0
    stats = node.stream_stats(location)
    [entry] = stop_and_describe(node, task_id)["RecordFiles"]
    node.unpublish(location)

    path = recorded_path(node, entry)
    report = probe.decode_all(path)
    assert report.errors == () and report.video_frames == len(spec.media().video)
    assert_slices_equal(path, [au.data for au in spec.media().video])
    sent_audio = [p.data for p in spec.media().audio]
    got = bitstream.opus_packets_from_file(path)
    assert 0 <= len(sent_audio) - len(got) <= 2 and got == sent_audio[len(sent_audio) - len(got):]
    for kind in ("video", "audio"):
        track = stats["Tracks"][kind]
        assert track["srtp_auth_failures"] == 0 and track["garbage"] == 0
        assert track["sender_reports"] >= 1  # FFmpeg's SRTCP Sender Reports, decrypted
    shown = node.logs() + str(stats) + str(node.call("DescribeRecordStatus", {"TaskId": task_id}))
    assert not any(secret in shown for secret in _secrets(keys, answer_keys))


def test_a_wrong_key_records_nothing_and_is_counted(node, tmp_path):
    spec = PublisherSpec(duration_s=2.0)
    location, targets, _ = _announce(node, "room-srtp-wrong", spec, new_keys())
    task_id = node.ok("StartRecord", start_record_body("room-srtp-wrong"))["TaskId"]
    sender = start_srtp_sender(spec, targets, new_keys())  # not the keys announced
    assert sender.wait(30) == 0
    tracks = node.stream_stats(location)["Tracks"]
    for kind in ("video", "audio"):
        assert tracks[kind]["frames"] == 0 and tracks[kind]["datagrams"] == 0
        assert tracks[kind]["srtp_auth_failures"] >= 50
    node.ok("StopRecord", {"TaskId": task_id})
    assert "RecordFiles" not in node.ok("DescribeRecordStatus", {"TaskId": task_id})  # ended with no file
    assert http("GET", node.base_url + "/healthz").status == 200
    assert node.unpublish(location).status == 200


def test_require_srtp_refuses_a_plain_offer(tmp_path):
    strict = NodeProcess(tmp_path / "data", free_port(), free_udp_range(20), tmp_path / "node.log",
                         extra_args=("--rtp-require-srtp",)).start()
    try:
        plain = strict.publish("room", "plain", offer_sdp(PublisherSpec(), True, True))
        assert plain.status == 400
        assert "takes only SRTP" in plain.body.decode() and "'m=video 9 RTP/AVP 96'" in plain.body.decode()
        encrypted = strict.publish("room", "srtp", srtp_offer(offer_sdp(PublisherSpec(), True, True), new_keys()))
        assert encrypted.status == 201
    finally:
        strict.stop()


def test_a_restored_srtp_stream_keeps_both_keys(tmp_path):
    """After the node is killed and restarted, the publisher (which never knew) is still
    decrypted, and the PLIs the node sends are still encrypted with the key it answered."""
    rtp_range = free_udp_range(40)
    first = node_on(tmp_path / "data", rtp_range, tmp_path / "a.log").start()
    spec = PublisherSpec(duration_s=14.0, clip=ClipSpec(keyint=300))  # the key frame at 0 s and 10 s only
    keys = new_keys()
    location, targets, answer_keys = _announce(first, "room-srtp-restore", spec, keys)
    # FFmpeg's Sender Reports go nowhere: this test's socket is the publisher's RTCP sender
    rtcp_less = {kind: (host, rtp, 9) for kind, (host, rtp, _) in targets.items()}
    sender = start_srtp_sender(spec, rtcp_less, keys)
    wait_until(lambda: first.stream_stats(location)["Tracks"]["video"]["frames"] > 30)
    worker = first.stream_stats(location)["WorkerPid"]
    first.process.kill()
    first.process.wait(10)
    wait_until(lambda: not alive(worker), timeout=10)

    second = node_on(tmp_path / "data", rtp_range, tmp_path / "b.log", port=first.port).start()
    control = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    control.bind(("127.0.0.1", 0))
    control.settimeout(2.0)
    try:
        task_id = second.ok("StartRecord", start_record_body("room-srtp-restore"))["TaskId"]
        wait_until(lambda: second.stream_stats(location)["Tracks"]["video"]["datagrams"] > 30)
        report = RtcpSrPacket(ssrc=1234, sender_info=RtcpSenderInfo(ntp_timestamp=1 << 32, rtp_timestamp=0,
                                                                  packet_count=0, octet_count=0))
        protect = Session(Policy(base64.b64decode(keys["video"]), Policy.SSRC_ANY_OUTBOUND))
        control.sendto(protect.protect_rtcp(bytes(report)), (targets["video"][0], targets["video"][2]))
        wait_until(lambda: second.stream_stats(location)["Tracks"]["video"]["rtcp"] == 1)
        # no key frame since the restart's first one is far off: the recording asks for one
        srtcp = control.recv(2048)
        [pli] = RtcpPacket.parse(Session(Policy(answer_keys[0], Policy.SSRC_ANY_INBOUND)).unprotect_rtcp(srtcp))
        assert isinstance(pli, RtcpPsfbPacket) and pli.fmt == RTCP_PSFB_PLI
        assert sender.wait(30) == 0
        [entry] = stop_and_describe(second, task_id)["RecordFiles"]
        path = recorded_path(second, entry)
        assert probe.decode_all(path).errors == () and probe.decode_all(path).video_frames >= 60
        assert not any(secret in second.logs() + first.logs() for secret in _secrets(keys, answer_keys))
    finally:
        control.close()
        sender.kill()
        second.stop()
