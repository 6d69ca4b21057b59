"""Pictures on the control plane: one event-1 callback each, no RecordFiles, no
aggregate event 1 at the end of a jpg task; TakeSnapshot asks every recording worker."""

import asyncio
from types import SimpleNamespace

import pytest

from contract import protocol
from contract.codes import CallbackEvent as E
from engine import errors, models
from engine.snapshots import SnapshotBook
from storage_adapters.uploader import UploadResult
from tests.engine.control_plane import OFFER, start_request

pytestmark = pytest.mark.asyncio


def jpg_request(room: str, stream_type: int = 3) -> models.StartRecordRequest:
    request = start_request(room, StreamType=stream_type)
    output = models.RecordOutput(**{**request.output.__dict__, "output_format": "jpg", "snapshot_interval": 5})
    return models.StartRecordRequest(request.room_id, request.input, output, request.storage, None)


def picture(task_id: str, n: int, ok: bool = True) -> protocol.SnapshotTaken:
    return protocol.SnapshotTaken(task_id, f"rec/{task_id}_room_alice_cam_V_2023111422132{n}000.jpg",
                                  f"file:///pictures/{n}.jpg", 1_700_000_000_000 + n * 5000, 64, 48, 1000 + n, ok)


async def test_every_picture_has_its_own_event_1_and_no_file_row(twins):
    await twins.node.publish_rtp("room", "cam", "alice", "Alice", OFFER)
    task_id = await twins.node.start_record(jpg_request("room"))
    worker = twins.supervisor.started[0]
    assert [r.spec.snapshot_interval_s for r in worker.of_type(protocol.StartRecording)] == [5]
    for n in (0, 1):
        worker.say(picture(task_id, n))
    await twins.until_events(task_id, [E.UPLOADED, E.UPLOADED])
    details = [b["detail"] for b in await _posted(twins, task_id, E.UPLOADED, 2)]
    assert [d["upload_status"] for d in details] == [1, 1]
    [first] = details[0]["file_info"]
    # on the node's disk a picture's FileUrl is the node's signed link to it, like any recording's
    key = picture(task_id, 0).file_id
    assert first["file_url"].startswith(f"http://127.0.0.1:8080/recordings/unit/{key}?Expires=")
    assert {k: first[k] for k in ("user_id", "user_name", "stream_id", "output_file_format", "file_size",
                                  "duration", "resolution_width", "resolution_height", "media_track_type",
                                  "begin_timestamp", "status")} == {
        "user_id": "alice", "user_name": "Alice", "stream_id": "cam",
        "output_file_format": "jpg", "file_size": 1000, "duration": 0, "resolution_width": 64,
        "resolution_height": 48, "media_track_type": 2, "begin_timestamp": 1_700_000_000_000, "status": 3}
    assert first["file_id"].endswith(picture(task_id, 0).file_id.rsplit("/", 1)[1])
    assert "RecordFiles" not in await twins.status(task_id)  # as the hosted service: none for a jpg task
    await twins.node.stop_record(task_id)
    await twins.until_events(task_id, [E.UPLOADED, E.UPLOADED, E.STOPPED_UPLOADING, E.NORMAL_EXIT])


async def test_a_picture_storage_refused_is_reported_failed(twins):
    await twins.node.publish_rtp("room", "cam", "alice", "Alice", OFFER)
    task_id = await twins.node.start_record(jpg_request("room"))
    twins.supervisor.started[0].say(picture(task_id, 0, ok=False))
    [body] = await _posted(twins, task_id, E.UPLOADED, 1)
    assert body["detail"]["upload_status"] == 2 and body["detail"]["file_info"][0]["status"] == 5


async def test_take_snapshot_asks_each_worker_of_the_task(twins):
    for stream in ("cam", "screen"):
        await twins.node.publish_rtp("room", stream, "alice", "Alice", OFFER)
    task_id = await twins.node.start_record(start_request("room"))
    await twins.node.take_snapshot(task_id)
    asked = [r.task_id for w in twins.supervisor.started for r in w.of_type(protocol.TakeSnapshot)]
    assert asked == [task_id, task_id]


async def test_take_snapshot_needs_a_recording_task_with_video(twins):
    await twins.node.publish_rtp("room", "cam", "alice", "Alice", OFFER)
    audio_only = await twins.node.start_record(start_request("room", StreamType=1))
    with pytest.raises(errors.InvalidParameter, match="no video"):
        await twins.node.take_snapshot(audio_only)
    paused = await twins.node.start_record(start_request("room"))
    await twins.node.pause_record(paused)
    with pytest.raises(errors.InvalidParameter, match="paused"):
        await twins.node.take_snapshot(paused)
    await twins.node.stop_record(paused)
    with pytest.raises(errors.TaskAlreadyStopped):
        await twins.node.take_snapshot(paused)
    with pytest.raises(errors.TaskNotFound):
        await twins.node.take_snapshot("NoSuchTask000000")
    assert not any(w.of_type(protocol.TakeSnapshot) for w in twins.supervisor.started)


class _Bucket:
    """A task's Destination as the book asks it: remote, with a public URL."""

    is_remote = True

    def public_url(self, key: str, node_url=None) -> str:
        return f"https://bucket.example/{key}"


async def test_a_spooled_picture_is_announced_when_the_bucket_has_it_whichever_comes_first():
    sent = []

    async def emit(*args):
        sent.append(args)

    async def file_url(task_id, key, worker_url):  # TaskDestinations.file_url of a bucket task
        return _Bucket().public_url(key)

    urls = SimpleNamespace(url_of=None, signed=lambda url: url)  # a bucket's URLs are handed out as they are
    book = SnapshotBook(SimpleNamespace(known=lambda task_id: _Bucket(), urls=urls, file_url=file_url), emit)
    book.register("T", "room", "http://cb")
    first, second = picture("T", 0), picture("T", 1)
    await book.taken(first, "cam", "alice", "Alice")
    settled = asyncio.create_task(book.wait_settled("T"))
    await asyncio.sleep(0.01)
    assert sent == [] and not settled.done()  # in the spool: not announced yet
    await book.object_uploaded(UploadResult("T", second.file_id, second.file_id, True))  # before its report
    await book.object_uploaded(UploadResult("T", first.file_id, first.file_id, True))
    await asyncio.wait_for(settled, 1)
    await book.taken(second, "cam", "alice", "Alice")
    urls = [args[5]["file_info"][0]["file_url"] for args in sent]
    assert urls == [f"https://bucket.example/{first.file_id}", f"https://bucket.example/{second.file_id}"]
    await book.object_uploaded(UploadResult("T", "rec/T_x_V.mp4", "rec/T_x_V.mp4", True))  # not a picture
    assert len(sent) == 2


async def _posted(twins, task_id: str, event_type: int, count: int) -> list[dict]:
    for _ in range(500):
        bodies = [b for b in twins.transport.posts if (b["task_id"], b["event_type"]) == (task_id, event_type)]
        if len(bodies) >= count:
            return bodies
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} callbacks {event_type} not posted: {twins.transport.posts}")
