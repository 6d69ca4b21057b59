"""Answer and callback shapes, as a client written for the hosted service reads them."""

from dataclasses import replace

import pytest

from engine import views
from engine.status import FileStatus, TaskStatus
from engine.store import FileRecord, TaskRecord
from tests.engine.control_plane import start_request

KEY = "rec/day1/TTTTTTTTTTTTTTTT_room_u_cam_VA_20240101000000000.mp4"
URL = "https://bucket.s3.us-east-1.amazonaws.com/" + KEY

AS_STORED = str  # hand FileUrls out as stored (the node signs its own links: engine.files)


def file_record(**changes) -> FileRecord:
    record = FileRecord(KEY, "T" * 16, "cam", "u", "U", "mp4", URL, 3, 1_700_000_000_000, FileStatus.UPLOADED,
                        size=10, duration_ms=2000, width=640, height=360)
    return replace(record, **changes)


def task_record(status=TaskStatus.ENDED, output_format="mp4") -> TaskRecord:
    request = start_request("room")
    request = replace(request, output=replace(request.output, output_format=output_format))
    return TaskRecord("T" * 16, None, "room", status, request, 1, begin_ms=1, end_ms=2)


def test_file_id_is_the_bare_name_and_file_url_the_whole_location():
    view = views.file_view(file_record(), AS_STORED)
    assert view["FileId"] == "TTTTTTTTTTTTTTTT_room_u_cam_VA_20240101000000000.mp4"
    assert view["FileUrl"] == URL
    # a client that joins OutputFolder and FileId finds the object
    assert "rec/day1/" + view["FileId"] == KEY


def test_file_at_the_bucket_root():
    assert views.file_view(file_record(file_id="a_VA_1.flv"), AS_STORED)["FileId"] == "a_VA_1.flv"


def test_every_file_has_an_empty_video_id_in_answers_and_callbacks():
    assert views.file_view(file_record(), AS_STORED)["VideoId"] == ""
    info = views.file_info(file_record(), AS_STORED)
    assert info["video_id"] == "" and info["file_id"] == views.file_view(file_record(), AS_STORED)["FileId"]
    assert set(info) == {"user_id", "user_name", "stream_id", "file_id", "file_url", "video_id",
                         "output_file_format", "file_size", "duration", "resolution_width", "resolution_height",
                         "media_track_type", "begin_timestamp", "status"}


@pytest.mark.parametrize("status, files, listed", [
    (TaskStatus.RECORDING, [], True),      # not ended: [] (files may come)
    (TaskStatus.PAUSED, [], True),
    (TaskStatus.ENDED, [], False),         # ended with nothing recorded: left out
    (TaskStatus.ENDED_ABNORMALLY, [], False),
    (TaskStatus.ENDED, [file_record()], True),
])
def test_record_files_left_out_of_an_ended_task_without_files(status, files, listed):
    data = views.task_status(task_record(status), files, AS_STORED)
    assert ("RecordFiles" in data) is listed
    if listed:
        assert data["RecordFiles"] == [views.file_view(f, AS_STORED) for f in files]


@pytest.mark.parametrize("status", [TaskStatus.RECORDING, TaskStatus.ENDED])
def test_snapshot_tasks_have_no_record_files(status):
    data = views.task_status(task_record(status, output_format="jpg"), [file_record(output_format="jpg")], AS_STORED)
    assert "RecordFiles" not in data and data["Status"] == int(status)
