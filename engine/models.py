"""API request models: every field validated (type and range) at the edge into
typed, immutable values. A bad field raises InvalidParameter naming it."""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine import defaults
from engine.errors import BodyUnreadable, InvalidParameter

# Letters, digits and the punctuation the hosted service allows in identifiers.
_IDENTIFIER = re.compile(r"^[A-Za-z0-9~!@#$%^&*()_+=\-`;',.<>/\\]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")

MISSING: Any = object()


def decode_body(raw: bytes) -> Any:
    """The request body as JSON (empty means {}); anything else is BodyUnreadable."""
    try:
        return json.loads(raw or b"{}")
    except RecursionError:
        raise BodyUnreadable("request body unreadable: JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise BodyUnreadable() from None


def utf8_size(value: str, name: str) -> int:
    """Bytes of value in UTF-8; a lone surrogate (a JSON escape like \\ud800) has none."""
    try:
        return len(value.encode())
    except UnicodeEncodeError:
        raise InvalidParameter(f"{name} is not valid Unicode (it has a lone surrogate)") from None


class Fields:
    """Typed reads from one JSON object, errors naming the dotted field path."""

    def __init__(self, data: Any, path: str = ""):
        if not isinstance(data, Mapping):
            raise InvalidParameter(f"{path or 'body'} must be a JSON object")
        self._data = data
        self._path = path

    def name(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def _get(self, key: str, default: Any) -> Any:
        value = self._data.get(key, MISSING)
        if value is MISSING or value is None:
            if default is MISSING:
                raise InvalidParameter(f"{self.name(key)} is required")
            return default
        return value

    def integer(self, key: str, default: Any = MISSING, *, lo: int | None = None, hi: int | None = None,
                choices: tuple[int, ...] | None = None) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidParameter(f"{self.name(key)} must be an integer")
        if choices is not None and value not in choices:
            raise InvalidParameter(f"{self.name(key)} must be one of {', '.join(map(str, choices))}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise InvalidParameter(f"{self.name(key)} must be between {lo} and {hi}")
        return value

    def boolean(self, key: str, default: Any = MISSING) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise InvalidParameter(f"{self.name(key)} must be true or false")
        return value

    def string(self, key: str, default: Any = MISSING, *, max_len: int = 1024, allow_empty: bool = True) -> str:
        value = self._get(key, default)
        if not isinstance(value, str):
            raise InvalidParameter(f"{self.name(key)} must be a string")
        if _CONTROL.search(value):
            raise InvalidParameter(f"{self.name(key)} must not contain control characters")
        if utf8_size(value, self.name(key)) > max_len:
            raise InvalidParameter(f"{self.name(key)} is longer than {max_len} bytes")
        if not allow_empty and not value:
            raise InvalidParameter(f"{self.name(key)} must not be empty")
        return value

    def identifier(self, key: str, default: Any = MISSING) -> str:
        value = self._get(key, default)
        if value is default and default is not MISSING:
            return value
        return check_identifier(value, self.name(key))

    def obj(self, key: str, *, required: bool = True) -> Fields:
        value = self._get(key, MISSING if required else {})
        return Fields(value, self.name(key))

    def array(self, key: str, *, max_len: int) -> list[Any]:
        value = self._get(key, [])
        if not isinstance(value, list):
            raise InvalidParameter(f"{self.name(key)} must be an array")
        if len(value) > max_len:
            raise InvalidParameter(f"{self.name(key)} must have at most {max_len} entries")
        return value


def check_identifier(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidParameter(f"{name} must be a string")
    size = utf8_size(value, name)
    if not 1 <= size <= defaults.IDENTIFIER_MAX_BYTES:
        raise InvalidParameter(f"{name} must be 1 to {defaults.IDENTIFIER_MAX_BYTES} bytes")
    if not _IDENTIFIER.match(value):
        raise InvalidParameter(f"{name} has characters that are not allowed")
    return value


def check_task_id(fields: Fields) -> str:
    """Any 16 characters: the hosted service's ids also hold '-' and '_' (e.g.
    `YRHu6-E4IyvEAAAD`), and one that names no task is 300001000, not malformed."""
    value = fields.string("TaskId", max_len=64)
    if len(value) != defaults.TASK_ID_LENGTH:
        raise InvalidParameter(f"TaskId must be {defaults.TASK_ID_LENGTH} characters")
    return value


@dataclass(frozen=True)
class RecordInput:
    record_mode: int
    stream_type: int
    record_streams: tuple[str, ...]
    max_idle_time: int
    max_record_time: int
    fill_blank: bool
    record_mute_audio: int = defaults.RECORD_MUTE_AUDIO_DEFAULT  # mp3 only: 2 leaves muted audio out
    mute_split_threshold: int | None = None  # mp3 with RecordMuteAudio 2: seconds of mute that start a new file


@dataclass(frozen=True)
class RecordOutput:
    output_format: str
    output_folder: str
    file_rule: int
    fragment_seconds: int
    realtime_upload_fragment: bool
    short_fragment_path: bool
    callback_url: str
    snapshot_interval: int = defaults.SNAPSHOT_INTERVAL_DEFAULT  # jpg only


@dataclass(frozen=True)
class Storage:
    vendor: int
    region: str
    bucket: str
    endpoint: str
    access_key_id: str = field(repr=False)
    access_key_secret: str = field(repr=False)

    def public_view(self) -> dict[str, Any]:
        """What may be shown: everything but the credentials."""
        return {"Vendor": self.vendor, "Region": self.region, "Bucket": self.bucket, "EndPoint": self.endpoint}


@dataclass(frozen=True)
class StartRecordRequest:
    room_id: str
    input: RecordInput
    output: RecordOutput
    storage: Storage
    client_task_id: str | None


@dataclass(frozen=True)
class TaskRequest:
    """StopRecord, DescribeRecordStatus, PauseRecord, ResumeRecord, TakeSnapshot."""

    task_id: str


@dataclass(frozen=True)
class DescribeTasksRequest:
    status: int
    room_id: str | None
    page_offset: int
    page_size: int
    start_time_ms: int
    end_time_ms: int


@dataclass(frozen=True)
class Limits:
    """Ranges that test configuration may lower; the defaults are the contract."""

    max_idle_time: tuple[int, int] = defaults.MAX_IDLE_TIME_RANGE
    max_record_time: tuple[int, int] = defaults.MAX_RECORD_TIME_RANGE


def parse_output_folder(value: str, name: str) -> str:
    """OutputFolder as a folder: "" (the bucket's root) or segments each ending in
    '/'. A trailing '/' is implied, as in the hosted service (`rec` is `rec/`)."""
    folder = value.lstrip("/")
    if "\\" in folder:
        raise InvalidParameter(f"{name} must not contain backslashes")
    if folder and not folder.endswith("/"):
        folder += "/"
    segments = folder.split("/")[:-1]
    if any(part in (".", "..") for part in segments):
        raise InvalidParameter(f"{name} must not contain '.' or '..' segments")
    if "" in segments:
        raise InvalidParameter(f"{name} must not contain empty segments")
    if any(len(segment.encode()) > defaults.OUTPUT_FOLDER_SEGMENT_MAX_BYTES for segment in segments):
        raise InvalidParameter(f"{name}: a folder name is longer than "
                               f"{defaults.OUTPUT_FOLDER_SEGMENT_MAX_BYTES} bytes")
    return folder


def parse_callback_url(value: str, name: str) -> str:
    if not value:
        return ""
    try:
        parsed = urllib.parse.urlsplit(value)
    except ValueError:  # e.g. an unclosed IPv6 literal: http://[::1/
        raise InvalidParameter(f"{name} is not a URL (malformed host)") from None
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InvalidParameter(f"{name} must be an http or https URL")
    try:
        port_ok = parsed.port != 0
    except ValueError:  # past 65535, or not a number
        port_ok = False
    if not port_ok:
        raise InvalidParameter(f"{name} port must be a number from 1 to 65535")
    if not value.isascii():  # HTTP clients send user info and host as Latin-1/IDNA: a URL must be encoded
        raise InvalidParameter(f"{name} must be an ASCII URL (percent-encode or punycode what is not)")
    return value


def parse_start_record(body: Any, limits: Limits = Limits()) -> StartRecordRequest:
    top = Fields(body)
    room_id = top.identifier("RoomId")
    client_task_id = top.identifier("ClientTaskId", None)

    inp = top.obj("RecordInputParams")
    record_mode = inp.integer("RecordMode", choices=(1, 2))
    if record_mode == 2:
        raise InvalidParameter("RecordInputParams.RecordMode: mixed-stream recording is not supported")
    streams = []
    for index, item in enumerate(inp.array("RecordStreamList", max_len=defaults.RECORD_STREAM_LIST_MAX)):
        entry = Fields(item, f"RecordInputParams.RecordStreamList[{index}]")
        streams.append(entry.identifier("StreamId"))
    record_input = RecordInput(
        record_mode=record_mode,
        stream_type=inp.integer("StreamType", defaults.STREAM_TYPE_DEFAULT, choices=(1, 2, 3, 4)),
        record_streams=tuple(dict.fromkeys(streams)),
        max_idle_time=inp.integer("MaxIdleTime", defaults.MAX_IDLE_TIME_DEFAULT,
                                  lo=limits.max_idle_time[0], hi=limits.max_idle_time[1]),
        max_record_time=inp.integer("MaxRecordTime", defaults.MAX_RECORD_TIME_DEFAULT,
                                    lo=limits.max_record_time[0], hi=limits.max_record_time[1]),
        fill_blank=inp.boolean("FillBlank", False),
        record_mute_audio=inp.integer("RecordMuteAudio", defaults.RECORD_MUTE_AUDIO_DEFAULT, choices=(1, 2)),
        mute_split_threshold=_split_threshold(inp),
    )

    out = top.obj("RecordOutputParams", required=False)
    output_format = out.string("OutputFileFormat", defaults.OUTPUT_FILE_FORMAT_DEFAULT, max_len=8)
    if output_format not in defaults.OUTPUT_FILE_FORMATS:
        raise InvalidParameter(
            f"RecordOutputParams.OutputFileFormat must be one of {', '.join(defaults.OUTPUT_FILE_FORMATS)}")
    realtime_upload_fragment = out.boolean("RealtimeUploadFragment", False)
    record_output = RecordOutput(
        output_format=output_format,
        output_folder=parse_output_folder(out.string("OutputFolder", "", max_len=512),
                                          "RecordOutputParams.OutputFolder"),
        file_rule=out.integer("OutputFileRule", defaults.OUTPUT_FILE_RULE_DEFAULT, choices=(1,)),
        fragment_seconds=out.integer("FragmentSeconds", defaults.FRAGMENT_SECONDS_DEFAULT,
                                     lo=defaults.FRAGMENT_SECONDS_RANGE[0], hi=defaults.FRAGMENT_SECONDS_RANGE[1]),
        realtime_upload_fragment=realtime_upload_fragment,
        # as in the hosted service, bare segment names only with playlists uploaded while recording
        short_fragment_path=out.boolean("ShortFragmentPath", False) and realtime_upload_fragment,
        callback_url=parse_callback_url(out.string("CallbackUrl", "", max_len=2048),
                                        "RecordOutputParams.CallbackUrl"),
        snapshot_interval=out.integer("SnapshotInterval", defaults.SNAPSHOT_INTERVAL_DEFAULT,
                                      lo=defaults.SNAPSHOT_INTERVAL_RANGE[0], hi=defaults.SNAPSHOT_INTERVAL_RANGE[1]),
    )
    _check_format_and_stream_type(output_format, record_input.stream_type)

    st = top.obj("StorageParams")
    vendor = st.integer("Vendor", lo=0, hi=10)
    bucket = st.string("Bucket", max_len=255, allow_empty=False)
    if not _BUCKET.match(bucket) or bucket in (".", ".."):
        raise InvalidParameter("StorageParams.Bucket must be letters, digits, '.', '_' or '-'")
    storage = Storage(
        vendor=vendor,
        region=st.string("Region", "", max_len=128),
        bucket=bucket,
        endpoint=st.string("EndPoint", "", max_len=512),
        access_key_id=st.string("AccessKeyId", "", max_len=256),
        access_key_secret=st.string("AccessKeySecret", "", max_len=256),
    )
    return StartRecordRequest(room_id, record_input, record_output, storage, client_task_id)


def _split_threshold(inp: Fields) -> int | None:
    """RecordMuteAudioSplitThreshold: absent or negative means never split; 0 splits at every mute."""
    value = inp.integer("RecordMuteAudioSplitThreshold", -1, lo=-(2**31), hi=defaults.MUTE_SPLIT_THRESHOLD_MAX)
    return value if value >= 0 else None


def _check_format_and_stream_type(output_format: str, stream_type: int) -> None:
    if output_format == "jpg" and stream_type == 1:
        raise InvalidParameter("RecordOutputParams.OutputFileFormat jpg takes pictures of video: "
                               "not with RecordInputParams.StreamType 1 (audio only)")
    if output_format == "mp3" and stream_type == 2:
        raise InvalidParameter("RecordOutputParams.OutputFileFormat mp3 records audio: "
                               "not with RecordInputParams.StreamType 2 (video only)")


def parse_task_request(body: Any) -> TaskRequest:
    return TaskRequest(task_id=check_task_id(Fields(body)))


def parse_describe_tasks(body: Any, now_ms: int) -> DescribeTasksRequest:
    top = Fields(body)
    status = top.integer("Status", choices=(2, 3))
    room_id = top.identifier("RoomId", None)
    page_offset = top.integer("PageOffset", 1, lo=0, hi=2**31 - 1) or 1  # 0 means 1, as in the hosted service
    page_size = top.integer("PageSize", defaults.DESCRIBE_PAGE_SIZE_DEFAULT,
                            lo=defaults.DESCRIBE_PAGE_SIZE_RANGE[0], hi=defaults.DESCRIBE_PAGE_SIZE_RANGE[1])
    end_ms = top.integer("EndTime", now_ms, lo=0, hi=2**53)
    start_ms = top.integer("StartTime", max(0, end_ms - defaults.DESCRIBE_WINDOW_MS), lo=0, hi=2**53)
    if start_ms > end_ms:
        raise InvalidParameter("StartTime must not be after EndTime")
    if end_ms - start_ms > defaults.DESCRIBE_WINDOW_MS:
        raise InvalidParameter("EndTime - StartTime must be at most 3 days")
    return DescribeTasksRequest(status, room_id, page_offset, page_size, start_ms, end_ms)
