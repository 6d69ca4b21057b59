"""Closed code enums shared by the engine and the workers (values are the API's)."""

from __future__ import annotations

import enum


class MediaKind(enum.StrEnum):
    AUDIO = "audio"
    VIDEO = "video"


class InputKind(enum.StrEnum):
    RTP = "rtp"  # plain RTP: the worker binds its UDP ports at start
    WHIP = "whip"  # WebRTC: a peer connection per SDP offer
    WHEP = "whep"  # pulled: the worker offers, a WHEP server answers and sends
    RTSP = "rtsp"  # pulled: the worker is an RTSP client (FFmpeg's, through PyAV)

    @property
    def pulled(self) -> bool:
        """The node subscribes to the stream rather than being sent it."""
        return self in (InputKind.WHEP, InputKind.RTSP)


class QuitReason(enum.IntEnum):
    """`detail.quit_reason` of callback event 2 (abnormal end)."""

    START_FAILED = 1
    MAX_IDLE_TIME = 3
    MAX_RECORD_TIME = 4
    NETWORK_DISCONNECTED = 6
    UNKNOWN = 1001
    FAILED_TO_OPEN_FILE = 1003
    OUT_OF_DISK_SPACE = 1004
    UNSUPPORTED_FORMAT = 1010


class CallbackEvent(enum.IntEnum):
    """`event_type` of a status callback."""

    UPLOADED = 1
    ABNORMAL_END = 2
    ROOM_EMPTY = 4
    NORMAL_EXIT = 5
    STREAM_MISSING = 6
    STOPPED_UPLOADING = 7
    PLAYLIST_UPLOADED = 102
    PAUSED = 201
    RESUMED = 202


class OfferRefusal(enum.IntEnum):
    """Why a worker did not accept a WHIP offer; the value is the HTTP status to answer."""

    INVALID = 400  # the offer is malformed
    UNSUPPORTED = 406  # well formed, but nothing in it can be recorded
    FAILED = 503  # the worker could not answer (ICE, a port, a timeout)
