import copy

import pytest

from engine import models
from engine.errors import BodyUnreadable, InvalidParameter

VALID = {
    "RoomId": "room-1",
    "RecordInputParams": {"RecordMode": 1, "StreamType": 3, "MaxIdleTime": 30, "MaxRecordTime": 600,
                          "RecordStreamList": [{"StreamId": "s1"}], "FillBlank": False},
    "RecordOutputParams": {"OutputFileFormat": "mp4", "OutputFolder": "rec/", "OutputFileRule": 1,
                           "FragmentSeconds": 15, "CallbackUrl": "http://127.0.0.1:9/cb"},
    "StorageParams": {"Vendor": 0, "Bucket": "bucket", "AccessKeyId": "AK", "AccessKeySecret": "SK"},
    "ClientTaskId": "client-1",
}


def with_change(path, value):
    body = copy.deepcopy(VALID)
    target = body
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return body


class _Absent:
    """The field left out of the body. Its repr is the same in every process, so test ids
    are too (pytest-xdist refuses workers that collected different ids)."""

    def __repr__(self) -> str:
        return "<absent>"


DELETE = _Absent()


def test_valid_request_parses_with_defaults():
    minimal = {"RoomId": "r", "RecordInputParams": {"RecordMode": 1}, "StorageParams": {"Vendor": 0, "Bucket": "b"}}
    req = models.parse_start_record(minimal)
    assert req.input.stream_type == 3
    assert req.input.max_idle_time == 30
    assert req.input.max_record_time == 86400
    assert req.input.fill_blank is False
    assert req.output.output_format == "mp4"
    assert req.output.fragment_seconds == 15
    assert req.output.output_folder == ""
    assert req.client_task_id is None


def test_full_request_parses():
    req = models.parse_start_record(VALID)
    assert req.input.record_streams == ("s1",)
    assert req.output.output_folder == "rec/"
    assert "SK" not in repr(req)


BAD = [
    (("RoomId",), DELETE, "RoomId is required"),
    (("RoomId",), "", "RoomId must be 1 to 128"),
    (("RoomId",), "x" * 129, "RoomId must be 1 to 128"),
    (("RoomId",), "a b", "RoomId has characters"),
    (("RoomId",), "a\nb", "RoomId has characters"),
    (("RoomId",), 5, "RoomId must be a string"),
    (("ClientTaskId",), "", "ClientTaskId must be 1 to 128"),
    (("RecordInputParams",), DELETE, "RecordInputParams is required"),
    (("RecordInputParams",), [], "RecordInputParams must be a JSON object"),
    (("RecordInputParams", "RecordMode"), DELETE, "RecordInputParams.RecordMode is required"),
    (("RecordInputParams", "RecordMode"), 3, "RecordInputParams.RecordMode must be one of"),
    (("RecordInputParams", "RecordMode"), 2, "mixed-stream recording is not supported"),
    (("RecordInputParams", "StreamType"), 0, "RecordInputParams.StreamType must be one of"),
    (("RecordInputParams", "StreamType"), "3", "RecordInputParams.StreamType must be an integer"),
    (("RecordInputParams", "StreamType"), True, "RecordInputParams.StreamType must be an integer"),
    (("RecordInputParams", "MaxIdleTime"), 4, "RecordInputParams.MaxIdleTime must be between 5 and 86400"),
    (("RecordInputParams", "MaxIdleTime"), 86401, "RecordInputParams.MaxIdleTime must be between"),
    (("RecordInputParams", "MaxRecordTime"), 299, "RecordInputParams.MaxRecordTime must be between 300"),
    (("RecordInputParams", "MaxRecordTime"), 86401, "RecordInputParams.MaxRecordTime must be between"),
    (("RecordInputParams", "FillBlank"), 1, "RecordInputParams.FillBlank must be true or false"),
    (("RecordInputParams", "RecordStreamList"), {"StreamId": "a"}, "RecordStreamList must be an array"),
    (("RecordInputParams", "RecordStreamList"), [{"StreamId": ""}], r"RecordStreamList\[0\].StreamId"),
    (("RecordInputParams", "RecordStreamList"), ["s"], r"RecordStreamList\[0\] must be a JSON object"),
    (("RecordOutputParams", "OutputFileFormat"), "mkv", "OutputFileFormat must be one of"),
    (("RecordOutputParams", "OutputFileFormat"), 1, "OutputFileFormat must be a string"),
    (("RecordOutputParams", "OutputFolder"), "a/../b", "OutputFolder must not contain '.' or '..'"),
    (("RecordOutputParams", "OutputFolder"), "..", "OutputFolder must not contain"),
    (("RecordOutputParams", "OutputFolder"), "a\\b", "OutputFolder must not contain backslashes"),
    (("RecordOutputParams", "OutputFolder"), "a//b", "OutputFolder must not contain empty"),
    (("RecordOutputParams", "OutputFolder"), "a\x00", "OutputFolder must not contain control"),
    (("RecordOutputParams", "OutputFileRule"), 2, "OutputFileRule must be one of 1"),
    (("RecordOutputParams", "FragmentSeconds"), 1, "FragmentSeconds must be between 2 and 60"),
    (("RecordOutputParams", "FragmentSeconds"), 61, "FragmentSeconds must be between 2 and 60"),
    (("RecordOutputParams", "RealtimeUploadFragment"), "yes", "RealtimeUploadFragment must be true"),
    (("RecordOutputParams", "ShortFragmentPath"), 0, "ShortFragmentPath must be true"),
    (("RecordOutputParams", "CallbackUrl"), "ftp://x/y", "CallbackUrl must be an http"),
    (("RecordOutputParams", "CallbackUrl"), "http://", "CallbackUrl must be an http"),
    (("RecordOutputParams", "CallbackUrl"), "http://[::1/", "CallbackUrl is not a URL"),
    (("RecordOutputParams", "CallbackUrl"), "http://127.0.0.1:99999/", "CallbackUrl port must be a number from 1"),
    (("RecordOutputParams", "CallbackUrl"), "http://127.0.0.1:0/", "CallbackUrl port must be a number from 1"),
    (("RecordOutputParams", "CallbackUrl"), "http://127.0.0.1:-1/", "CallbackUrl port must be a number from 1"),
    (("RecordOutputParams", "CallbackUrl"), "http://127.0.0.1:8o/", "CallbackUrl port must be a number from 1"),
    # found by the fuzz: aiohttp cannot send a user part outside Latin-1 (UnicodeEncodeError at delivery)
    (("RecordOutputParams", "CallbackUrl"), "http://:\u1a82\u1a82@127.0.0.1/", "CallbackUrl must be an ASCII URL"),
    (("RecordOutputParams", "CallbackUrl"), "http://bücher.example/cb", "CallbackUrl must be an ASCII URL"),
    (("RecordInputParams", "RecordStreamList"), [{"StreamId": f"s{i}"} for i in range(51)],
     "RecordInputParams.RecordStreamList must have at most 50 entries"),
    (("StorageParams",), DELETE, "StorageParams is required"),
    (("StorageParams", "Vendor"), DELETE, "StorageParams.Vendor is required"),
    (("StorageParams", "Vendor"), 11, "StorageParams.Vendor must be between 0 and 10"),
    (("StorageParams", "Vendor"), -1, "StorageParams.Vendor must be between 0 and 10"),
    (("StorageParams", "Bucket"), DELETE, "StorageParams.Bucket is required"),
    (("StorageParams", "Bucket"), "", "StorageParams.Bucket must not be empty"),
    (("StorageParams", "Bucket"), "a/b", "StorageParams.Bucket must be letters"),
    (("StorageParams", "Bucket"), "..", "StorageParams.Bucket must be letters"),
    (("StorageParams", "Region"), 5, "StorageParams.Region must be a string"),
    (("StorageParams", "EndPoint"), "x" * 600, "StorageParams.EndPoint is longer"),
    (("StorageParams", "AccessKeyId"), [], "StorageParams.AccessKeyId must be a string"),
    (("StorageParams", "AccessKeySecret"), 7, "StorageParams.AccessKeySecret must be a string"),
]


@pytest.mark.parametrize("path, value, message", BAD, ids=[f"{'.'.join(p)}={v!r}"[:60] for p, v, _ in BAD])
def test_bad_field_names_the_field(path, value, message):
    with pytest.raises(InvalidParameter, match=message):
        models.parse_start_record(with_change(path, value))


def string_paths(body, prefix=()):
    for key, value in body.items():
        if isinstance(value, dict):
            yield from string_paths(value, (*prefix, key))
        elif isinstance(value, str):
            yield (*prefix, key)


@pytest.mark.parametrize("path", list(string_paths(VALID)), ids=".".join)
def test_a_lone_surrogate_names_the_field(path):
    """json.loads turns the escape \\ud800 into a str that cannot be encoded."""
    with pytest.raises(InvalidParameter, match=rf"^{'.'.join(path)} is not valid Unicode"):
        models.parse_start_record(with_change(path, "a\ud800"))


def test_a_lone_surrogate_in_a_listed_stream_names_it():
    body = with_change(("RecordInputParams", "RecordStreamList"), [{"StreamId": "s"}, {"StreamId": "\udfff"}])
    with pytest.raises(InvalidParameter, match=r"RecordStreamList\[1\].StreamId is not valid Unicode"):
        models.parse_start_record(body)


def test_record_stream_list_takes_up_to_the_limit():
    streams = [{"StreamId": f"s{i}"} for i in range(50)]
    parsed = models.parse_start_record(with_change(("RecordInputParams", "RecordStreamList"), streams))
    assert len(parsed.input.record_streams) == 50


@pytest.mark.parametrize("url", ["http://127.0.0.1:65535/cb", "https://[::1]:1/", "http://example.com/cb?x=1"])
def test_callback_urls_that_are_fine(url):
    assert models.parse_start_record(with_change(("RecordOutputParams", "CallbackUrl"), url)).output.callback_url == url


@pytest.mark.parametrize("raw, message", [
    (b"{not json", "request body unreadable"),
    (b"\xff\xfe{", "request body unreadable"),
    (b"1" * 5000, "request body unreadable"),  # past int()'s digit limit: ValueError
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),  # RecursionError
    (b'{"a": ' * 100_000 + b"1" + b"}" * 100_000, "nested too deeply"),
])
def test_unreadable_bodies(raw, message):
    with pytest.raises(BodyUnreadable, match=message):
        models.decode_body(raw)


def test_an_empty_body_is_an_empty_object():
    assert models.decode_body(b"") == {}


def test_body_must_be_an_object():
    with pytest.raises(InvalidParameter, match="body must be a JSON object"):
        models.parse_start_record([1])


def test_secret_never_in_error_messages():
    body = with_change(("StorageParams", "Bucket"), "a/b")
    with pytest.raises(InvalidParameter) as info:
        models.parse_start_record(body)
    assert "SK" not in info.value.message


def test_output_folder_leading_slash_is_dropped():
    assert models.parse_start_record(with_change(("RecordOutputParams", "OutputFolder"), "/x/")).output.output_folder == "x/"


@pytest.mark.parametrize("given, folder", [("rec", "rec/"), ("a/b", "a/b/"), ("a/b/", "a/b/"), ("/", ""), ("", "")])
def test_output_folder_is_a_folder(given, folder):
    """The hosted service implies OutputFolder's trailing '/': `rec` puts files in rec/."""
    assert models.parse_start_record(with_change(("RecordOutputParams", "OutputFolder"), given)).output.output_folder \
        == folder


@pytest.mark.parametrize("realtime, short, expected", [
    (True, True, True), (False, True, False), (True, False, False), (DELETE, True, False)])
def test_short_fragment_path_only_with_realtime_upload(realtime, short, expected):
    body = with_change(("RecordOutputParams", "ShortFragmentPath"), short)
    if realtime is not DELETE:
        body["RecordOutputParams"]["RealtimeUploadFragment"] = realtime
    assert models.parse_start_record(body).output.short_fragment_path is expected


def test_lowered_limits_for_tests():
    limits = models.Limits(max_record_time=(5, 86400))
    body = with_change(("RecordInputParams", "MaxRecordTime"), 5)
    assert models.parse_start_record(body, limits).input.max_record_time == 5
    with pytest.raises(InvalidParameter):
        models.parse_start_record(body)


@pytest.mark.parametrize("body, message", [
    ({}, "TaskId must be a string|TaskId is required"),
    ({"TaskId": "short"}, "TaskId must be 16"),
    ({"TaskId": "x" * 17}, "TaskId must be 16"),
    ({"TaskId": "abcdefghijklmn\no"}, "TaskId must not contain control"),
    ({"TaskId": 12}, "TaskId must be a string"),
    ({"TaskId": "\ud800" * 16}, "TaskId is not valid Unicode"),
])
def test_task_id_checked(body, message):
    with pytest.raises(InvalidParameter, match=message):
        models.parse_task_request(body)


NOW_MS = 1_700_000_000_000


def test_describe_tasks_defaults():
    req = models.parse_describe_tasks({"Status": 2}, NOW_MS)
    assert (req.page_offset, req.page_size, req.end_time_ms) == (1, 50, NOW_MS)
    assert req.end_time_ms - req.start_time_ms == 3 * 86400 * 1000


def test_describe_tasks_page_offset_zero_is_page_one():
    """The hosted service: "if not set or set to 0, 1 is used"."""
    assert models.parse_describe_tasks({"Status": 2, "PageOffset": 0}, NOW_MS).page_offset == 1
    assert models.parse_describe_tasks({"Status": 3, "PageOffset": 2}, NOW_MS).page_offset == 2


@pytest.mark.parametrize("task_id", ["YRHu6-E4IyvEAAAD", "abcdefghijklmno!", "a_b-c.d~e=f+g/h\\"])
def test_any_sixteen_characters_are_a_task_id(task_id):
    """Hosted ids hold '-' (YRHu6-E4IyvEAAAD): such an id is looked up, not refused as malformed."""
    assert models.parse_task_request({"TaskId": task_id}).task_id == task_id


@pytest.mark.parametrize("body, message", [
    ({}, "Status is required"),
    ({"Status": 1}, "Status must be one of 2, 3"),
    ({"Status": 2, "PageOffset": -1}, "PageOffset must be between 0 and"),
    ({"Status": 2, "PageSize": 51}, "PageSize must be between 1 and 50"),
    ({"Status": 2, "PageSize": 0}, "PageSize must be between 1 and 50"),
    ({"Status": 2, "RoomId": ""}, "RoomId must be 1 to 128"),
    ({"Status": 2, "RoomId": "r\ud800"}, "RoomId is not valid Unicode"),
    ({"Status": 2, "StartTime": NOW_MS, "EndTime": NOW_MS - 1}, "StartTime must not be after EndTime"),
    ({"Status": 2, "StartTime": 0, "EndTime": NOW_MS}, "at most 3 days"),
    ({"Status": 2, "StartTime": "x"}, "StartTime must be an integer"),
])
def test_describe_tasks_bad(body, message):
    with pytest.raises(InvalidParameter, match=message):
        models.parse_describe_tasks(body, NOW_MS)
