"""Object keys of recorded files (OutputFileRule 1)."""

from __future__ import annotations

import datetime as dt
import urllib.parse

# Characters kept as they are in file names; everything else is percent-encoded.
_SAFE = "._~-"

TRACK_LETTERS = {1: "A", 2: "V", 3: "VA"}  # MediaTrackType -> Type in the name


def escape(component: str) -> str:
    return urllib.parse.quote(component, safe=_SAFE)


def utc_stamp(epoch_ms: int) -> str:
    moment = dt.datetime.fromtimestamp(epoch_ms / 1000, tz=dt.UTC)
    return moment.strftime("%Y%m%d%H%M%S") + f"{epoch_ms % 1000:03d}"


def file_stem(*, task_id: str, room_id: str, user_id: str, stream_id: str, media_track_type: int,
              begin_ms: int) -> str:
    """`TaskId_RoomId_UserId_StreamId_Type_UTC` (the extension follows), each id escaped."""
    parts = (task_id, room_id, user_id, stream_id)
    stem = "_".join(escape(part) for part in parts)
    return f"{stem}_{TRACK_LETTERS[media_track_type]}_{utc_stamp(begin_ms)}"

