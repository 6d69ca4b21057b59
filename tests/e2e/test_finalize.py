"""Faststart MP4: `recnode finalize` on a recorded fragmented MP4, and a node
started with --finalize-mp4 whose MP4s on its disk are rewritten so when they close.
Both copy the packets (same bytes, same times) into a file whose one moov comes
first and carries real durations."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import av
import pytest

from testkit.node import REPO, NodeProcess, start_record_body
from testkit.ports import free_port, free_udp_range
from testkit.rtp import PublisherSpec, wait_manifest
from tests.e2e.media_checks import recorded_path
from tests.e2e.publishing import publish, run_publisher, stop_and_describe


def top_level_boxes(path: Path) -> list[str]:
    boxes, data, offset = [], path.read_bytes(), 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, offset)
        if size == 1:
            size = struct.unpack_from(">Q", data, offset + 8)[0]
        boxes.append(kind.decode("latin-1"))
        offset += size if size else len(data)
    return boxes


def packets(path: Path) -> dict[str, list[tuple[int | None, bytes]]]:
    """Each track's packets in order (the tracks may be interleaved differently)."""
    tracks: dict[str, list[tuple[int | None, bytes]]] = {}
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.size:
                tracks.setdefault(packet.stream.type, []).append((packet.pts, bytes(packet)))
    return tracks


def durations(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        return [float(s.duration * s.time_base) for s in container.streams]


def record_mp4(node, room: str, tmp_path) -> dict:
    spec = PublisherSpec(duration_s=3.0)
    location, targets = publish(node, room, "cam", spec)
    task_id = node.ok("StartRecord", start_record_body(room))["TaskId"]
    process, spec = run_publisher(spec, targets, tmp_path)
    wait_manifest(spec.manifest_path, proc=process)
    [entry] = stop_and_describe(node, task_id)["RecordFiles"]
    node.unpublish(location)
    return entry


def test_recnode_finalize_copies_a_fragmented_recording_into_a_faststart_mp4(node, tmp_path):
    source = recorded_path(node, record_mp4(node, "room-finalize", tmp_path))
    assert "moof" in top_level_boxes(source)  # as recorded: fragmented
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECNODE_")}
    done = subprocess.run([sys.executable, "-m", "engine.cli", "finalize", str(source)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    target = Path(done.stdout.strip())
    assert target == source.with_name(source.stem + ".faststart.mp4")
    boxes = top_level_boxes(target)
    assert boxes.index("moov") < boxes.index("mdat") and "moof" not in boxes
    assert packets(target) == packets(source)
    assert all(2.9 <= d <= 3.1 for d in durations(target)), durations(target)
    missing = subprocess.run([sys.executable, "-m", "engine.cli", "finalize", str(tmp_path / "none.mp4")],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and missing.stderr.startswith("recnode finalize: ")


@pytest.fixture(scope="module")
def finalizing_node(tmp_path_factory):
    base = tmp_path_factory.mktemp("finalizing")
    process = NodeProcess(base / "data", free_port(), free_udp_range(), base / "node.log",
                          extra_args=("--finalize-mp4",)).start()
    yield process
    process.stop()


def test_a_node_with_finalize_mp4_stores_faststart_files(finalizing_node, tmp_path):
    entry = record_mp4(finalizing_node, "room-faststart", tmp_path)
    path = recorded_path(finalizing_node, entry)
    boxes = top_level_boxes(path)
    assert boxes.index("moov") < boxes.index("mdat") and "moof" not in boxes
    assert entry["FileSize"] == path.stat().st_size
    assert all(2.9 <= d <= 3.1 for d in durations(path)), durations(path)
    with av.open(str(path)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 90
