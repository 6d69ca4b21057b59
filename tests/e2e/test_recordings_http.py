"""Watching Vendor 0 recordings over HTTP on a real node with a real RTP publisher:
FileUrl is a signed link into /recordings/; while the stream is recorded its HLS
playlist is live (segments listed by name, each fetched through the route) and
its fragmented MP4 is served as far as written; afterwards every byte matches
the file on disk."""

from __future__ import annotations

import time
import urllib.parse

import av

from testkit.node import http, start_record_body
from testkit.rtp import PublisherSpec, wait_manifest
from tests.e2e.media_checks import recorded_path
from tests.e2e.publishing import publish, run_publisher


def _files_by_format(node, task_ids: list[str], timeout: float = 15) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        found = {}
        for task_id in task_ids:
            for entry in node.ok("DescribeRecordStatus", {"TaskId": task_id})["RecordFiles"]:
                found[entry["OutputFileFormat"]] = entry
        if len(found) == len(task_ids):
            return found
        assert time.monotonic() < deadline, found
        time.sleep(0.2)


def _live_playlist(url: str, timeout: float = 15) -> str:
    """The playlist once it lists a segment (the first is cut after FragmentSeconds)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = http("GET", url)
        if answer.status == 200 and ".ts?" in answer.body.decode():
            return answer.body.decode()
        assert time.monotonic() < deadline, answer
        time.sleep(0.2)


def test_recordings_are_watched_live_and_served_whole_through_signed_links(node, tmp_path):
    spec = PublisherSpec(duration_s=7.0)
    location, targets = publish(node, "room-watch", "cam", spec)
    hls_body = start_record_body("room-watch")
    hls_body["RecordOutputParams"].update(OutputFileFormat="hls", FragmentSeconds=2)
    hls_task = node.ok("StartRecord", hls_body)["TaskId"]
    mp4_task = node.ok("StartRecord", start_record_body("room-watch"))["TaskId"]
    process, spec = run_publisher(spec, targets, tmp_path)

    files = _files_by_format(node, [hls_task, mp4_task])
    hls_url, mp4_url = files["hls"]["FileUrl"], files["mp4"]["FileUrl"]
    assert hls_url.startswith(node.base_url + "/recordings/bucket/rec/") and "Signature=" in hls_url
    # live: the EVENT playlist so far, its segments by name, signed, fetched relative to it
    text = _live_playlist(hls_url)
    assert "#EXT-X-ENDLIST" not in text and "#EXT-X-PLAYLIST-TYPE:EVENT" in text
    first = next(line for line in text.splitlines() if line and not line.startswith("#"))
    assert "/" not in first.split("?")[0]
    segment = http("GET", urllib.parse.urljoin(hls_url, first))
    assert segment.status == 200 and segment.headers["Content-Type"] == "video/mp2t"
    assert segment.body[0] == 0x47 and len(segment.body) % 188 == 0  # MPEG-TS packets
    # the fragmented MP4 as far as written, by ranges
    head = http("GET", mp4_url, headers={"Range": "bytes=0-15"})
    assert head.status == 206 and head.body[4:8] == b"ftyp"
    assert head.headers["Content-Type"] == "video/mp4"
    live_size = int(head.headers["Content-Range"].rsplit("/", 1)[1])

    wait_manifest(spec.manifest_path, proc=process)
    for task_id in (hls_task, mp4_task):
        node.ok("StopRecord", {"TaskId": task_id})
    node.unpublish(location)
    done = {f: node.wait_task(t, lambda d: d["RecordFiles"] and all(x["Status"] == 3 for x in d["RecordFiles"]))
            ["RecordFiles"][0] for f, t in (("hls", hls_task), ("mp4", mp4_task))}

    whole = http("GET", done["mp4"]["FileUrl"])
    on_disk = recorded_path(node, done["mp4"]).read_bytes()
    assert whole.status == 200 and whole.body == on_disk and len(on_disk) > live_size
    playlist = http("GET", done["hls"]["FileUrl"]).body.decode()
    assert playlist.rstrip().endswith("#EXT-X-ENDLIST")
    folder = recorded_path(node, done["hls"]).parent
    segments = [line for line in playlist.splitlines() if line and not line.startswith("#")]
    for line in segments:
        answer = http("GET", urllib.parse.urljoin(done["hls"]["FileUrl"], line))
        assert answer.status == 200 and answer.body == (folder / line.split("?")[0]).read_bytes()
    # what a player gets through the route decodes as the recording
    with av.open(done["hls"]["FileUrl"]) as container:
        assert sum(1 for _ in container.decode(video=0)) == len(spec.media().video)
    unsigned = done["mp4"]["FileUrl"].split("?")[0]
    assert http("GET", unsigned).status == 403
