"""Task life cycle on in-memory twins: StartRecord to the last callback, the room
rules (MaxIdleTime, MaxRecordTime, events 4 and 6), pause/resume, a worker's failure."""

import pytest

from contract import protocol
from contract.codes import CallbackEvent as E
from contract.codes import OfferRefusal, QuitReason
from engine import errors, models
from tests.engine.control_plane import OFFER, eventually, start_request

pytestmark = pytest.mark.asyncio


async def test_stop_record_ends_at_once_with_final_files_then_events_7_1_5(twins):
    await twins.node.publish_rtp("room", "cam", "alice", "Alice", OFFER)
    task_id = await twins.node.start_record(start_request("room"))
    worker = twins.supervisor.started[0]
    assert [r.spec.task_id for r in worker.of_type(protocol.StartRecording)] == [task_id]

    async def file_listed() -> bool:
        return bool((await twins.status(task_id))["RecordFiles"])

    await eventually(file_listed)  # the worker's FileOpened goes through its event queue
    recording = await twins.status(task_id)
    assert recording["Status"] == 2 and [f["Status"] for f in recording["RecordFiles"]] == [1]
    listed = recording["RecordFiles"][0]
    # the hosted service's shape: FileId is the bare name, FileUrl the whole location
    # (a node-disk FileUrl is a signed link: its path ends with the key)
    assert "/" not in listed["FileId"] and listed["FileUrl"].split("?")[0].endswith("/rec/" + listed["FileId"])
    assert listed["VideoId"] == ""
    key = "rec/" + listed["FileId"]  # what the worker calls the file: its object key
    for second in range(1, 30):  # a backlog of what the worker said, not yet handled
        worker.say(protocol.FileProgress(task_id, key, second, second * 1000))

    await twins.node.stop_record(task_id)

    # StopRecord answers once everything the worker said is in the store: status 3, final sizes
    stopped = await twins.status(task_id)
    assert stopped["Status"] == 3 and stopped["RecordEndTimestamp"] == twins.clock.wall
    [file] = stopped["RecordFiles"]
    assert file["Status"] == 3 and file["FileSize"] > 0 and file["Duration"] == 1000
    assert file["StreamId"] == "cam" and file["UserId"] == "alice" and file["UserName"] == "Alice"
    assert [r.task_id for r in worker.of_type(protocol.StopRecording)] == [task_id]
    await twins.until_events(task_id, [E.STOPPED_UPLOADING, E.UPLOADED, E.NORMAL_EXIT])
    uploaded = await twins.delivered(task_id, E.UPLOADED)
    assert uploaded["upload_status"] == 1 and [f["file_id"] for f in uploaded["file_info"]] == [file["FileId"]]
    assert [(f["file_url"], f["video_id"]) for f in uploaded["file_info"]] == [(file["FileUrl"], "")]
    with pytest.raises(errors.TaskAlreadyStopped):
        await twins.node.stop_record(task_id)


async def test_record_files_listed_while_recording_and_left_out_of_a_task_that_ended_with_none(twins):
    """As the hosted service answers: RecordFiles is absent, not [], once a task ended without a file."""
    task_id = await twins.node.start_record(start_request("empty-room"))
    assert (await twins.status(task_id))["RecordFiles"] == []
    await twins.node.stop_record(task_id)
    stopped = await twins.status(task_id)
    assert stopped["Status"] == 3 and "RecordFiles" not in stopped


async def test_unknown_task_is_not_found(twins):
    with pytest.raises(errors.TaskNotFound):
        await twins.node.stop_record("NoSuchTask000000")
    with pytest.raises(errors.TaskNotFound):
        await twins.node.describe_record_status("NoSuchTask000000")


async def test_max_idle_time_ends_an_empty_room_with_quit_reason_3(twins):
    await twins.node.publish_rtp("idle-room", "other", "u", "u", OFFER)  # not in RecordStreamList: does not count
    task_id = await twins.node.start_record(start_request("idle-room", MaxIdleTime=5,
                                                          RecordStreamList=[{"StreamId": "cam"}]))
    await twins.node.tasks.tick()  # the room is seen empty now
    twins.clock.advance(4.9)
    await twins.node.tasks.tick()
    assert (await twins.status(task_id))["Status"] == 2
    twins.clock.advance(0.1)
    await twins.node.tasks.tick()
    assert (await twins.status(task_id))["Status"] == 3
    await twins.until_events(task_id, [E.ABNORMAL_END, E.UPLOADED])
    assert await twins.delivered(task_id, E.ABNORMAL_END) == {"quit_reason": QuitReason.MAX_IDLE_TIME}


async def test_max_record_time_stops_the_recording_with_quit_reason_4(twins):
    await twins.node.publish_rtp("long-room", "cam", "u", "u", OFFER)
    task_id = await twins.node.start_record(start_request("long-room", MaxRecordTime=300))
    twins.clock.advance(299.9)
    await twins.node.tasks.tick()
    assert (await twins.status(task_id))["Status"] == 2
    twins.clock.advance(0.1)
    await twins.node.tasks.tick()
    stopped = await twins.status(task_id)
    assert stopped["Status"] == 3 and [f["Status"] for f in stopped["RecordFiles"]] == [3]
    assert [r.task_id for r in twins.supervisor.started[0].of_type(protocol.StopRecording)] == [task_id]
    await twins.until_events(task_id, [E.ABNORMAL_END, E.UPLOADED])
    assert await twins.delivered(task_id, E.ABNORMAL_END) == {"quit_reason": QuitReason.MAX_RECORD_TIME}


async def test_room_empty_and_stream_missing_events_come_after_30_s(twins):
    task_id = await twins.node.start_record(start_request("quiet-room", MaxIdleTime=120,
                                                          RecordStreamList=[{"StreamId": "late"}]))
    await twins.node.tasks.tick()
    twins.clock.advance(29.9)
    await twins.node.tasks.tick()
    assert await twins.events(task_id) == []
    twins.clock.advance(0.1)
    await twins.node.tasks.tick()
    await twins.until_events(task_id, [E.ROOM_EMPTY, E.STREAM_MISSING])
    assert await twins.delivered(task_id, E.STREAM_MISSING) == {"stream_id": "late"}
    twins.clock.advance(30)
    await twins.node.tasks.tick()
    assert await twins.events(task_id) == [E.ROOM_EMPTY, E.STREAM_MISSING, E.ROOM_EMPTY]  # event 6 once only


async def test_a_late_listed_stream_is_recorded_and_an_unlisted_one_is_not(twins):
    task_id = await twins.node.start_record(start_request("late-room", RecordStreamList=[{"StreamId": "cam"}]))
    await twins.node.publish_rtp("late-room", "screen", "u", "u", OFFER)
    await twins.node.publish_rtp("late-room", "cam", "u", "u", OFFER)
    screen, cam = twins.supervisor.started
    assert screen.of_type(protocol.StartRecording) == []
    assert [r.spec.task_id for r in cam.of_type(protocol.StartRecording)] == [task_id]


async def test_pause_and_resume(twins):
    await twins.node.publish_rtp("pause-room", "cam", "u", "u", OFFER)
    task_id = await twins.node.start_record(start_request("pause-room"))
    worker = twins.supervisor.started[0]
    with pytest.raises(errors.TaskNotPaused):
        await twins.node.resume_record(task_id)
    await twins.node.pause_record(task_id)
    assert (await twins.status(task_id))["Status"] == 5
    assert [r.task_id for r in worker.of_type(protocol.PauseRecording)] == [task_id]
    with pytest.raises(errors.InvalidParameter, match="already paused"):
        await twins.node.pause_record(task_id)
    await twins.node.resume_record(task_id)
    assert (await twins.status(task_id))["Status"] == 2
    assert [r.task_id for r in worker.of_type(protocol.ResumeRecording)] == [task_id]
    await twins.until_events(task_id, [E.PAUSED, E.RESUMED])


async def test_a_stream_joining_a_paused_task_starts_paused(twins):
    task_id = await twins.node.start_record(start_request("paused-room"))
    await twins.node.pause_record(task_id)
    await twins.node.publish_rtp("paused-room", "cam", "u", "u", OFFER)
    worker = twins.supervisor.started[0]
    assert [type(r) for r in worker.requests] == [protocol.StartRecording, protocol.PauseRecording]


@pytest.mark.parametrize("quit_reason, why", [(QuitReason.OUT_OF_DISK_SPACE, "spool full"),
                                               (QuitReason.UNSUPPORTED_FORMAT, "no SPS: nothing plays it")])
async def test_a_recording_the_worker_cannot_go_on_with_ends_the_task_abnormally(twins, quit_reason, why):
    await twins.node.publish_rtp("full-room", "cam", "u", "u", OFFER)
    task_id = await twins.node.start_record(start_request("full-room"))
    twins.supervisor.started[0].say(protocol.RecordingFailed(task_id, quit_reason, why))
    await twins.until_events(task_id, [E.ABNORMAL_END, E.UPLOADED])
    assert (await twins.status(task_id))["Status"] == 4
    assert await twins.delivered(task_id, E.ABNORMAL_END) == {"quit_reason": quit_reason}


async def test_describe_tasks_lists_active_and_ended(twins):
    first = await twins.node.start_record(start_request("list-room"))
    second = await twins.node.start_record(start_request("list-room"))
    await twins.node.stop_record(first)
    window = {"StartTime": twins.clock.wall - 1000, "EndTime": twins.clock.wall + 1000}
    active = await twins.node.describe_tasks(models.parse_describe_tasks({"Status": 2, **window}, twins.clock.wall))
    ended = await twins.node.describe_tasks(models.parse_describe_tasks({"Status": 3, **window}, twins.clock.wall))
    assert [t["TaskId"] for t in active["TaskList"]] == [second]
    assert [t["TaskId"] for t in ended["TaskList"]] == [first]


async def test_an_unrecordable_whip_offer_ends_a_task_waiting_for_it_with_quit_reason_1010(twins):
    waiting = await twins.node.start_record(start_request("codec-room"))
    other_stream = await twins.node.start_record(start_request("codec-room", RecordStreamList=[{"StreamId": "x"}]))
    twins.supervisor.offer_refusal = OfferRefusal.UNSUPPORTED  # e.g. only H.265 video offered
    with pytest.raises(errors.IngestError) as refused:
        await twins.node.publish_whip("codec-room", "cam", "u", "u", "v=0\r\n")
    assert refused.value.status == 406  # the publisher is told, as before
    await twins.until_events(waiting, [E.ABNORMAL_END, E.UPLOADED])
    assert await twins.delivered(waiting, E.ABNORMAL_END) == {"quit_reason": QuitReason.UNSUPPORTED_FORMAT}
    ended = await twins.status(waiting)
    assert ended["Status"] == 4 and "RecordFiles" not in ended
    assert (await twins.status(other_stream))["Status"] == 2  # it does not record "cam"


async def test_an_unrecordable_rtp_offer_ends_only_tasks_that_record_nothing_else(twins):
    await twins.node.publish_rtp("mixed-room", "cam", "u", "u", OFFER)
    recording = await twins.node.start_record(start_request("mixed-room"))
    vp8_only = "v=0\r\nm=video 9 RTP/AVP 97\r\na=rtpmap:97 VP8/90000\r\n"
    with pytest.raises(errors.IngestError) as refused:
        await twins.node.publish_rtp("mixed-room", "screen", "u", "u", vp8_only)
    assert refused.value.status == 400 and "offers no H264" in refused.value.reason
    assert (await twins.status(recording))["Status"] == 2  # "cam" goes on being recorded
    empty = await twins.node.start_record(start_request("empty-codec-room"))
    with pytest.raises(errors.IngestError):
        await twins.node.publish_rtp("empty-codec-room", "screen", "u", "u", vp8_only)
    await twins.until_events(empty, [E.ABNORMAL_END, E.UPLOADED])
    assert await twins.delivered(empty, E.ABNORMAL_END) == {"quit_reason": 1010}


async def test_a_malformed_offer_ends_no_task(twins):
    task_id = await twins.node.start_record(start_request("garbage-room"))
    with pytest.raises(errors.IngestError):
        await twins.node.publish_rtp("garbage-room", "cam", "u", "u", "hello")
    assert (await twins.status(task_id))["Status"] == 2
