"""Publishing into a fleet (real `recnode serve` processes sharing the session's
PostgreSQL): a full node answers 307 to a node with room, and publishers that
follow it (plain-RTP announce, aiortc and FFmpeg over WHIP, each with the ingest
token) are recorded there; with --room-affinity a room's streams go to the node
holding it; with no node free, the busy answer as a node alone gives."""

from __future__ import annotations

import asyncio
import re
import urllib.parse

from testkit import bitstream, probe
from testkit.node import NodeProcess, http, start_record_body
from testkit.ports import free_port, free_udp_range
from testkit.rtp import PublisherSpec, offer_sdp, parse_answer, wait_manifest
from testkit.whip import PublisherSpec as WhipSpec
from testkit.whip import read_manifest, start_publisher
from tests.e2e.media_checks import assert_slices_equal, recorded_path, sent_video_aus
from tests.e2e.publishing import run_publisher, stop_and_describe
from tests.e2e.test_fleet import rows

TOKEN = "fleet-ingest-token-4d1e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def fleet_node(store_url: str, tmp_path, name: str, *args: str) -> NodeProcess:
    return NodeProcess(tmp_path / name, free_port(), free_udp_range(20), tmp_path / f"{name}.log",
                       extra_env={"RECNODE_STORE_URL": store_url, "RECNODE_INGEST_TOKEN": TOKEN},
                       extra_args=("--test-limits", "--node-id", name, *args)).start()


def announce(node: NodeProcess, room: str, stream: str, **kwargs):
    return node.publish(room, stream, offer_sdp(PublisherSpec(), True, True), user_id=f"user-{stream}",
                        headers=AUTH, **kwargs)


def redirects(node: NodeProcess, kind: str, reason: str) -> float:
    metrics = http("GET", node.base_url + "/metrics").body.decode()
    found = re.search(rf'recnode_publish_redirects_total{{input="{kind}",reason="{reason}"}} (\S+)', metrics)
    return float(found.group(1)) if found else 0.0


async def whip_publish(kind: str, url: str, manifest: str):
    process = await start_publisher(kind, WhipSpec(url=url, manifest=manifest, token=TOKEN, linger_s=0.5))
    await asyncio.wait_for(process.wait(), 60)
    return read_manifest(manifest)


def test_a_full_node_redirects_publishers_that_are_recorded_on_the_node_with_room(postgres, tmp_path):
    url = postgres.create_database()
    full = fleet_node(url, tmp_path, "full", "--max-streams", "1")
    free = fleet_node(url, tmp_path, "free", "--max-streams", "4")
    try:
        assert announce(full, "filler", "cam").posted_to == [full.base_url + "/rtp/filler/cam?UserId=user-cam"]
        room = "redirected-room"
        task_id = free.ok("StartRecord", start_record_body(room))["TaskId"]
        # no token: refused as before, the fleet's addresses not given away
        assert full.publish(room, "rtp-cam", offer_sdp(PublisherSpec(), True, True), follow=False).status == 401

        spec = PublisherSpec(duration_s=3.0)
        first = full.publish(room, "rtp-cam", offer_sdp(spec, True, True), user_id="u-rtp", headers=AUTH,
                             follow=False)
        assert first.status == 307 and first.headers["Location"] == f"{free.base_url}/rtp/{room}/rtp-cam?UserId=u-rtp"
        answer = announce(full, room, "rtp-cam")
        assert answer.status == 201 and answer.posted_to[1:] == [
            f"{free.base_url}/rtp/{room}/rtp-cam?UserId=user-rtp-cam"]
        assert answer.headers["Location"].startswith(free.base_url + "/rtp/resource/")
        publisher, spec = run_publisher(spec, parse_answer(answer.body.decode()), tmp_path)

        async def both_whip():
            return await asyncio.gather(*(
                whip_publish(kind, f"{full.base_url}/whip/{room}/{kind}-cam?UserId=u-{kind}",
                             str(tmp_path / f"{kind}.json")) for kind in ("aiortc", "ffmpeg")))

        aiortc, ffmpeg = asyncio.run(both_whip())
        assert not aiortc.error and not ffmpeg.error, (aiortc.error, ffmpeg.error)
        assert [urllib.parse.urlsplit(u).port for u in aiortc.posted_to] == [full.port, free.port]
        manifest = wait_manifest(spec.manifest_path, proc=publisher)
        assert publisher.wait(30) == 0

        files = {f["StreamId"]: f for f in stop_and_describe(free, task_id)["RecordFiles"]}
        assert sorted(files) == ["aiortc-cam", "ffmpeg-cam", "rtp-cam"]
        rtp_path = recorded_path(free, files["rtp-cam"])
        assert probe.decode_all(rtp_path).errors == ()
        assert_slices_equal(rtp_path, sent_video_aus(manifest))
        for stream, sent in (("aiortc-cam", aiortc), ("ffmpeg-cam", ffmpeg)):
            path = recorded_path(free, files[stream])
            assert probe.decode_all(path).errors == ()
            published = bitstream.h264_slice_nals_from_aus(sent.video_annexb())
            got = bitstream.h264_slice_nals_from_file(path)
            assert got and got == published[len(published) - len(got):]  # from the first key frame on
        assert rows(url, "SELECT node_id FROM streams WHERE room_id='filler'") == [("full",)]
        assert (redirects(full, "rtp", "full"), redirects(full, "whip", "full")) == (2.0, 2.0)
        assert full.logs().count('"publish_redirected"') == 4 and TOKEN not in full.logs()
    finally:
        full.stop()
        free.stop()


def test_room_affinity_and_a_fleet_with_no_node_free(postgres, tmp_path):
    url = postgres.create_database()
    one = fleet_node(url, tmp_path, "one", "--max-streams", "2", "--room-affinity")
    two = fleet_node(url, tmp_path, "two", "--max-streams", "2", "--room-affinity")
    try:
        assert announce(two, "room", "first").status == 201
        second = announce(one, "room", "second")  # one has room, but two holds the room
        assert second.status == 201 and [urllib.parse.urlsplit(u).port for u in second.posted_to] == [
            one.port, two.port]
        assert rows(url, "SELECT stream_id, node_id FROM streams ORDER BY stream_id") == [
            ("first", "two"), ("second", "two")]
        assert redirects(one, "rtp", "room_affinity") == 1.0
        for stream in ("a", "b"):  # two is full; one takes other rooms until it is full too
            answer = announce(one, f"other-{stream}", stream)
            assert answer.status == 201 and len(answer.posted_to) == 1
        # No node free: the busy answer, after at most one hop (the rows may be a renewal old)
        for kind in ("rtp", "whip"):
            answer = http("POST", f"{one.base_url}/{kind}/last-room/cam", offer_sdp(PublisherSpec(), True, True)
                          .encode(), {"Content-Type": "application/sdp", **AUTH})
            if answer.status == 307:
                answer = http("POST", answer.headers["Location"], b"v=0\r\n", {"Content-Type": "application/sdp",
                                                                              **AUTH})
            assert answer.status == 503 and answer.headers["Retry-After"] == "5", answer
            assert answer.body.startswith(b"node at capacity")
    finally:
        one.stop()
        two.stop()
