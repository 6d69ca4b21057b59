"""VP8 bitstream facts a recorder needs to remux without decoding.

Covers: the RTP payload descriptor (RFC 7741 4.2), which packet starts a frame, joining
a frame's payloads back into the VP8 frame, and the frame header (RFC 6386 9.1): key
frame or not, and a key frame's picture size.

Why not aiortc's `VpxPayloadDescriptor.parse`: it reads one packet's descriptor, while a
recorder has to judge whole frames (first partition present, a key frame with its start
code and a size) so that a broken one is dropped like a lost one instead of being muxed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from workers.codecs.base import VideoCodec

# First octet of the descriptor
_X = 0x80  # extended control bits present
_N = 0x20  # non-reference frame
_S = 0x10  # start of a VP8 partition
_PID_MASK = 0x0F
# Extended control bits
_I = 0x80  # PictureID present
_L = 0x40  # TL0PICIDX present
_T = 0x20  # TID/Y present
_K = 0x10  # KEYIDX present
_M = 0x80  # first PictureID octet: 15-bit PictureID

FRAME_TAG_SIZE = 3
KEYFRAME_START_CODE = b"\x9d\x01\x2a"
KEYFRAME_HEADER_SIZE = FRAME_TAG_SIZE + len(KEYFRAME_START_CODE) + 4  # + width, height
_INVERSE_FRAME_FLAG = 0x01  # P bit of the frame tag: 0 on key frames
_DIMENSION_MASK = 0x3FFF  # the top two bits are the scaling mode


@dataclass(frozen=True, slots=True)
class PayloadDescriptor:
    """The VP8 payload descriptor at the start of every RTP payload."""

    size: int  # bytes it takes in the payload
    non_reference: bool
    start: bool  # S: the packet begins a partition
    partition_id: int
    picture_id: int | None = None  # 7 or 15 bits
    tl0_pic_index: int | None = None
    temporal_layer: int | None = None  # TID
    layer_sync: bool | None = None  # Y
    key_index: int | None = None  # KEYIDX

    @property
    def starts_frame(self) -> bool:
        return self.start and self.partition_id == 0


def parse_descriptor(payload: bytes) -> PayloadDescriptor:
    """Parse the descriptor of an RTP payload; ValueError when it is truncated."""
    if not payload:
        raise ValueError("empty VP8 payload")
    first = payload[0]
    fields: dict[str, int | bool] = {}
    pos = 1
    if first & _X:
        extension = _octet(payload, pos, "extended control bits")
        pos += 1
        if extension & _I:
            picture_id = _octet(payload, pos, "PictureID")
            if picture_id & _M:
                picture_id = (picture_id & 0x7F) << 8 | _octet(payload, pos + 1, "15-bit PictureID")
                pos += 1
            fields["picture_id"] = picture_id
            pos += 1
        if extension & _L:
            fields["tl0_pic_index"] = _octet(payload, pos, "TL0PICIDX")
            pos += 1
        if extension & (_T | _K):
            tid_key = _octet(payload, pos, "TID/KEYIDX")
            pos += 1
            if extension & _T:
                fields["temporal_layer"] = tid_key >> 6
                fields["layer_sync"] = bool(tid_key & 0x20)
            if extension & _K:
                fields["key_index"] = tid_key & 0x1F
    return PayloadDescriptor(pos, bool(first & _N), bool(first & _S), first & _PID_MASK, **fields)


def _octet(payload: bytes, pos: int, what: str) -> int:
    if pos >= len(payload):
        raise ValueError(f"VP8 payload descriptor truncated in {what}")
    return payload[pos]


def payload_starts_frame(payload: bytes) -> bool:
    """Whether an RTP payload begins a VP8 frame (S=1, PID=0); the jitter buffer's `starts_frame`."""
    try:
        return parse_descriptor(payload).starts_frame
    except ValueError:
        return False


def depayload_frame(payloads: Iterable[bytes]) -> bytes:
    """RTP payloads of one frame, in order, to the VP8 frame.

    Empty payloads (padding) are skipped. Raises ValueError when the payloads do not make
    a VP8 frame: a descriptor is truncated, the first payload does not start the frame,
    or the frame header is not one (see `check_frame`).
    """
    parts: list[bytes] = []
    for payload in payloads:
        if not payload:
            continue
        descriptor = parse_descriptor(payload)
        if not parts and not descriptor.starts_frame:
            raise ValueError("VP8 frame does not begin with the start of its first partition")
        parts.append(payload[descriptor.size:])
    frame = b"".join(parts)
    check_frame(frame)
    return frame


def check_frame(frame: bytes) -> None:
    """ValueError unless `frame` has a frame tag and, for a key frame, a valid key frame header."""
    if len(frame) < FRAME_TAG_SIZE:
        raise ValueError(f"VP8 frame of {len(frame)} bytes has no frame tag")
    if is_keyframe(frame):
        _keyframe_dimensions(frame)


def is_keyframe(frame: bytes) -> bool:
    """Whether the frame's tag says key frame (P bit 0); False for an empty frame."""
    return bool(frame) and not frame[0] & _INVERSE_FRAME_FLAG


def keyframe_size(frame: bytes) -> tuple[int, int]:
    """(width, height) of a key frame, without the scaling bits; ValueError if it is not one."""
    if not is_keyframe(frame):
        raise ValueError("not a VP8 key frame")
    return _keyframe_dimensions(frame)


def _keyframe_dimensions(frame: bytes) -> tuple[int, int]:
    if len(frame) < KEYFRAME_HEADER_SIZE:
        raise ValueError("VP8 key frame header is truncated")
    pos = FRAME_TAG_SIZE + len(KEYFRAME_START_CODE)
    if frame[FRAME_TAG_SIZE:pos] != KEYFRAME_START_CODE:
        raise ValueError("VP8 key frame lacks its start code")
    width = int.from_bytes(frame[pos:pos + 2], "little") & _DIMENSION_MASK
    height = int.from_bytes(frame[pos + 2:pos + 4], "little") & _DIMENSION_MASK
    if not (width and height):
        raise ValueError("VP8 key frame of size 0")
    return width, height


class Vp8Codec(VideoCodec):
    """VP8 (RFC 7741): frames pass through as the encoder made them."""

    name = "VP8"
    container_codec = "vp8"

    payload_starts_frame = staticmethod(payload_starts_frame)
    is_keyframe = staticmethod(is_keyframe)
    keyframe_size = staticmethod(keyframe_size)

    def depayload(self, payloads: Iterable[bytes]) -> bytes:
        return depayload_frame(payloads)
