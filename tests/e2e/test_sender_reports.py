"""Bogus and hostile RTCP Sender Reports from real publishers: aiortc's NTP 0 <-> RTP 0
reports before its media flows, NTP far in the past and the future, RTP timestamps
unrelated to the media, reports for an SSRC that sends nothing. The worker stays up,
the file holds exactly what was published, as long as it was, in lip sync."""

import asyncio
import json

import pytest

from testkit import bitstream, probe
from testkit.node import NodeProcess, start_record_body
from testkit.ports import free_port, free_udp_range
from testkit.rtp import PublisherSpec as RtpPublisherSpec
from testkit.rtp import Quirks, wait_manifest
from testkit.whip import PublisherSpec, read_manifest, start_publisher
from tests.e2e.media_checks import assert_recorded_as_sent, recorded_path
from tests.e2e.publishing import publish, run_publisher, stop_and_describe

FPS = 30
LIP_SYNC_S = 0.020  # as the other lip-sync tests require
WORKER_DIED = "worker_died"  # what the node logs when a worker process ends unasked


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    base = tmp_path_factory.mktemp("sender-reports")
    process = NodeProcess(base / "data", free_port(), free_udp_range(), base / "node.log",
                          extra_args=("--test-limits",)).start()
    yield process
    process.stop()


async def _publish(spec: PublisherSpec) -> int:
    process = await start_publisher("aiortc", spec)
    return await asyncio.wait_for(process.wait(), 60)


def test_whip_publisher_with_bogus_sender_reports_is_recorded_exactly(node, tmp_path):
    room = "sr-whip"
    task_id = node.ok("StartRecord", start_record_body(room))["TaskId"]
    manifest_path = tmp_path / "whip.json"
    spec = PublisherSpec(url=f"{node.base_url}/whip/{room}/cam?UserId=u-cam", manifest=str(manifest_path),
                         video_frames=120, media_delay_s=2.5, hostile_sender_reports=True)
    assert asyncio.run(_publish(spec)) == 0
    manifest = read_manifest(manifest_path)
    assert not manifest.error, manifest.error
    data = stop_and_describe(node, task_id)
    [entry] = data["RecordFiles"]
    path = recorded_path(node, entry)
    assert WORKER_DIED not in node.logs(), node.logs()[-3000:]
    report = probe.decode_all(path)
    assert report.errors == () and report.video_codec == "h264" and report.audio_codec == "opus"
    sent = bitstream.h264_slice_nals_from_aus(manifest.video_annexb())
    got = bitstream.h264_slice_nals_from_file(path)
    assert got == sent  # the publisher's first frame is a key frame, sent once the node listens
    sent_audio, got_audio = manifest.audio(), bitstream.opus_packets_from_file(path)
    assert got_audio == sent_audio[len(sent_audio) - len(got_audio):] and len(got_audio) >= len(sent_audio) - 2
    published_s = spec.video_frames / FPS
    assert abs(report.video_duration_s - published_s) <= 2 / FPS, report
    assert abs(entry["Duration"] / 1000 - published_s) <= 2 / FPS + 0.1, entry["Duration"]
    offsets = probe.av_offsets(path)
    assert len(offsets) >= 3 and max(abs(o) for o in offsets) <= LIP_SYNC_S, offsets
    assert _refused(node, room) == {"ntp_zero", "rtp_off_media", "ntp_off_transit"}


def test_rtp_publisher_with_hostile_sender_reports_is_recorded_exactly(node, tmp_path):
    spec = RtpPublisherSpec(duration_s=4.0, quirks=Quirks(hostile_sender_reports=True, audio_delay_s=0.2))
    location, targets = publish(node, "sr-rtp", "cam", spec)
    task_id = node.ok("StartRecord", start_record_body("sr-rtp"))["TaskId"]
    process, spec = run_publisher(spec, targets, tmp_path)
    manifest = wait_manifest(spec.manifest_path, proc=process)
    assert process.wait(30) == 0
    data = stop_and_describe(node, task_id)
    node.unpublish(location)
    [entry] = data["RecordFiles"]
    path = recorded_path(node, entry)
    assert WORKER_DIED not in node.logs(), node.logs()[-3000:]
    assert_recorded_as_sent(path, entry, manifest)  # decodes, byte for byte, as long as published
    offsets = probe.av_offsets(path)
    assert len(offsets) == len(spec.media().flash_times) and max(abs(o) for o in offsets) <= LIP_SYNC_S, offsets
    assert _refused(node, "sr-rtp") == {"ntp_zero", "rtp_off_media", "ntp_off_transit"}


def _refused(node, room: str) -> set[str]:
    """The reasons the room's worker gave for the Sender Reports it refused (logged once each)."""
    events = (json.loads(line) for line in node.logs().splitlines() if line.startswith("{"))
    return {e["reason"] for e in events if e.get("event") == "sender_report_refused" and e.get("room_id") == room}
