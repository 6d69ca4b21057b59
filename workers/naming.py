"""Object keys of recorded files (OutputFileRule 1).

A name is `TaskId_RoomId_UserId_StreamId_Type_UTC` plus its extension, each
identifier percent-encoded where it has characters outside `[A-Za-z0-9._~-]`.
The last path segment of a key (OutputFolder's tail, which prefixes names, then
the name, then the longest suffix a writer appends: an HLS segment's
`_<n>.ts`) stays within NAME_MAX_BYTES, the file systems' limit. When it would
not, the longest identifiers are cut to one common length, the largest that
fits: each keeps the start of its encoded form (never half a %XX) and ends with
`+` and 16 hex digits of the SHA-256 of the whole identifier. `+` is never in an
encoded identifier (it is encoded as %2B), so a cut identifier never equals an
uncut one, and names are stable: the same ids and folder give the same name.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import urllib.parse

# Characters kept as they are in file names; everything else is percent-encoded.
_SAFE = "._~-"

TRACK_LETTERS = {1: "A", 2: "V", 3: "VA"}  # MediaTrackType -> Type in the name

NAME_MAX_BYTES = 255  # a path segment (a file name) on ext4, XFS, btrfs, NTFS, APFS
LONGEST_SUFFIX_BYTES = len("_4294967295.ts")  # an HLS segment's; extensions are shorter
CUT_MARK = "+"
HASH_HEX_DIGITS = 16
MIN_CUT_BYTES = len(CUT_MARK) + HASH_HEX_DIGITS
# What a name holds besides the three identifiers, with the longest Type letters
# so that every file of a task (V, A, VA) gets the same identifier forms.
_SEPARATORS = 5
_FIXED_BYTES = _SEPARATORS + len("VA") + len("yyyyMMddHHmmssSSS") + LONGEST_SUFFIX_BYTES


def escape(component: str) -> str:
    return urllib.parse.quote(component, safe=_SAFE)


def utc_stamp(epoch_ms: int) -> str:
    moment = dt.datetime.fromtimestamp(epoch_ms / 1000, tz=dt.UTC)
    return moment.strftime("%Y%m%d%H%M%S") + f"{epoch_ms % 1000:03d}"


def name_prefix(folder: str) -> str:
    """The part of OutputFolder in a file's last path segment: a folder is a key
    prefix used as given, so `rec` (no slash) prefixes the name."""
    return folder.rsplit("/", 1)[-1]


def identifier_budget(task_id: str, folder: str) -> int:
    """Bytes the three encoded identifiers may take in one name."""
    return NAME_MAX_BYTES - len(name_prefix(folder).encode()) - len(escape(task_id)) - _FIXED_BYTES


def _cut(identifier: str, encoded: str, size: int) -> str:
    keep = encoded[: size - MIN_CUT_BYTES]
    split = keep.rfind("%", max(0, len(keep) - 2))  # a %XX escape cut in two
    if split != -1:
        keep = keep[:split]
    return keep + CUT_MARK + hashlib.sha256(identifier.encode()).hexdigest()[:HASH_HEX_DIGITS]


def encoded_identifiers(ids: tuple[str, ...], budget: int) -> list[str]:
    """Each identifier encoded; the longest cut to the largest common size that fits `budget`."""
    encoded = [escape(identifier) for identifier in ids]
    if sum(len(e) for e in encoded) <= budget:
        return encoded
    size = max(len(e) for e in encoded)
    while size > MIN_CUT_BYTES and sum(min(len(e), size) for e in encoded) > budget:
        size -= 1
    if sum(min(len(e), size) for e in encoded) > budget:
        raise ValueError("OutputFolder leaves no room for the file name")
    return [e if len(e) <= size else _cut(i, e, size) for i, e in zip(ids, encoded, strict=True)]


def file_stem(*, task_id: str, room_id: str, user_id: str, stream_id: str, media_track_type: int,
              begin_ms: int, folder: str = "") -> str:
    """`TaskId_RoomId_UserId_StreamId_Type_UTC` (the extension follows), each id escaped,
    within NAME_MAX_BYTES together with `folder`'s tail and any writer's suffix."""
    ids = encoded_identifiers((room_id, user_id, stream_id), identifier_budget(task_id, folder))
    return "_".join([escape(task_id), *ids, TRACK_LETTERS[media_track_type], utc_stamp(begin_ms)])
