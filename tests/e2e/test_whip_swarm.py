"""The benchmarks' fast WHIP publisher (benchmarks.whip_swarm: aiortc negotiates, the
pre-packetized clip goes through the peer's SRTP session) is recorded exactly as the
slow one (benchmarks.whip_publisher: FFmpeg's WHIP muxer) sending the same clip: the
same H.264 slices, byte for byte, and the same Opus packets, in one real node."""

from __future__ import annotations

import subprocess
import time

import pytest

from benchmarks import whip_swarm, whip_publisher
from benchmarks.node_calls import stream_stats
from testkit import bitstream
from testkit.node import NodeProcess, start_record_body
from testkit.ports import free_port, free_udp_range
from testkit.rtp import ClipSpec, PublisherSpec
from tests.e2e.media_checks import recorded_path
from tests.e2e.publishing import stop_and_describe

CLIP = ClipSpec(width=320, height=240, fps=30, keyint=30, bitrate_kbps=500)
PEERS = 2  # the swarm drives two peers at once: each recording must be whole


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    base = tmp_path_factory.mktemp("whip-swarm")
    process = NodeProcess(base / "data", free_port(), free_udp_range(), base / "node.log",
                          extra_args=("--test-limits",)).start()
    yield process
    process.stop()


def whip_url(node, room: str) -> str:
    return f"{node.base_url}/whip/{room}/cam?UserId=u-{room}"


def recorded_file(node, task_id: str):
    [entry] = stop_and_describe(node, task_id)["RecordFiles"]
    return recorded_path(node, entry)


def wait_received(node, location: str, sent: dict, timeout_s: float = 5) -> None:
    """Until the node has taken every frame sent (so that StopRecord cuts nothing)."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = stream_stats(node, location)
        assert "error" not in stats, stats
        tracks = stats.get("Tracks", {})
        if all(tracks.get(kind, {}).get("frames", 0) >= len(sent[kind]) for kind in ("video", "audio")):
            return
        assert time.monotonic() < deadline, (tracks, {kind: len(sent[kind]) for kind in ("video", "audio")})
        time.sleep(0.05)


def test_the_fast_publisher_is_recorded_as_the_slow_one(node, tmp_path):
    spec = PublisherSpec(duration_s=3.0, clip=CLIP)
    clip = whip_publisher.ensure_clip(spec)
    rooms = ["slow"] + [f"fast-{i}" for i in range(PEERS)]
    tasks = {room: node.ok("StartRecord", start_record_body(room))["TaskId"] for room in rooms}
    start_time = time.time() + whip_publisher.CONNECT_S + 1.0
    specs = {room: PublisherSpec(duration_s=3.0, clip=CLIP, start_time=start_time, seed=i,
                                 manifest_path=str(tmp_path / f"{room}.json")) for i, room in enumerate(rooms)}
    slow = whip_publisher.start(specs["slow"], whip_url(node, "slow"), clip)
    swarm = whip_swarm.start(clip)
    try:
        for room in rooms[1:]:
            whip_swarm.add_peer(swarm, specs[room], whip_url(node, room))
        sent = {room: whip_publisher.wait_json(specs[room].manifest_path, 60, slow if room == "slow" else swarm,
                                               specs[room].manifest_path) for room in rooms}
        for room, manifest in sent.items():
            assert manifest["completed"] and not manifest["error"], (room, manifest["error"])
            wait_received(node, manifest["location"], manifest)
        files = {room: recorded_file(node, tasks[room]) for room in rooms}
    finally:
        for process in (slow, swarm):
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
    video = {room: bitstream.h264_slice_nals_from_file(path) for room, path in files.items()}
    audio = {room: bitstream.opus_packets_from_file(path) for room, path in files.items()}
    frames = len(sent["slow"]["video"])
    assert len(video["slow"]) == frames > 60  # one slice per frame: every frame sent is in the file
    for room in rooms[1:]:
        assert video[room] == video["slow"], room  # byte for byte
        # audio: the same packets; where a file starts (on the key frame) may take one more or less
        # Opus packet captured just before it, as arrival order decides
        common = min(len(audio[room]), len(audio["slow"]))
        assert common > 100 and abs(len(audio[room]) - len(audio["slow"])) <= 2, room
        assert audio[room][-common:] == audio["slow"][-common:], room
        assert len(sent[room]["video"]) == frames
