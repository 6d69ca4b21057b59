"""H.265 (HEVC) facts a recorder needs to remux without decoding: NAL unit types, key
frames (IRAP pictures), VPS / SPS / PPS in front of every key frame, and the picture
size from the SPS (ITU-T H.265 7.3.2.2, up to the conformance window).

H.265 reaches us only from RTSP sources, depayloaded by FFmpeg (`workers.inputs.rtsp`):
no RTP depayloader here (RFC 7798 over WebRTC / plain RTP is not offered).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import TYPE_CHECKING

from workers.codecs.base import VideoCodec
from workers.codecs.h264 import split_annexb, to_annexb
from workers.codecs.h264_sps import BitReader, unescape_rbsp

if TYPE_CHECKING:
    from contract.worker import TrackSpec

NAL_VPS = 32
NAL_SPS = 33
NAL_PPS = 34
NAL_AUD = 35
IRAP_TYPES = range(16, 22)  # BLA, IDR, CRA: decoding can start here
PARAMETER_SET_TYPES = (NAL_VPS, NAL_SPS, NAL_PPS)
SPROP_KEYS = ("sprop-vps", "sprop-sps", "sprop-pps")  # RFC 7798 SDP parameters


def nal_type(nal: bytes) -> int:
    if len(nal) < 2:
        raise ValueError("H.265 NAL unit shorter than its header")
    return (nal[0] >> 1) & 0x3F


def is_keyframe(annexb: bytes) -> bool:
    return any(len(nal) >= 2 and nal_type(nal) in IRAP_TYPES for nal in split_annexb(annexb))


def _skip_profile_tier_level(reader: BitReader, max_sub_layers_minus1: int) -> None:
    reader.u(8 + 32 + 48)  # profile space / tier / idc, compatibility flags, constraint flags
    reader.u(8)  # general_level_idc
    present = [(reader.flag(), reader.flag()) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1:
        reader.u(2 * (8 - max_sub_layers_minus1))  # reserved_zero_2bits
    for profile, level in present:
        if profile:
            reader.u(88)
        if level:
            reader.u(8)


def sps_size(nal: bytes) -> tuple[int, int]:
    """(width, height) of a sequence parameter set NAL unit (with its 2-byte header),
    the conformance window applied; ValueError when it is not a well-formed SPS."""
    if nal_type(nal) != NAL_SPS:
        raise ValueError("not an H.265 SPS NAL unit")
    reader = BitReader(unescape_rbsp(nal[2:]))
    reader.u(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = reader.u(3)
    reader.u(1)  # sps_temporal_id_nesting_flag
    _skip_profile_tier_level(reader, max_sub_layers_minus1)
    reader.ue()  # sps_seq_parameter_set_id
    chroma_format_idc = reader.ue()
    if chroma_format_idc > 3:
        raise ValueError("chroma_format_idc out of range")
    if chroma_format_idc == 3:
        reader.flag()  # separate_colour_plane_flag
    width, height = reader.ue(), reader.ue()
    if reader.flag():  # conformance_window_flag
        left, right, top, bottom = (reader.ue() for _ in range(4))
        sub_width = 2 if chroma_format_idc in (1, 2) else 1
        sub_height = 2 if chroma_format_idc == 1 else 1
        width -= sub_width * (left + right)
        height -= sub_height * (top + bottom)
    if width <= 0 or height <= 0:
        raise ValueError("SPS leaves no picture")
    return width, height


class H265Codec(VideoCodec):
    """H.265 access units in Annex B, VPS / SPS / PPS on every key frame."""

    name = "H265"
    container_codec = "hevc"

    is_keyframe = staticmethod(is_keyframe)

    def __init__(self, spec: TrackSpec) -> None:
        super().__init__(spec)
        self._sets: dict[int, bytes] = {}  # the latest of each parameter set type
        for key in SPROP_KEYS:
            value = spec.fmtp_value(key)
            for item in (value or "").split(","):
                if item:
                    self._observe([base64.b64decode(item + "=" * (-len(item) % 4))])

    def _observe(self, nals: Iterable[bytes]) -> None:
        for nal in nals:
            if len(nal) >= 2 and nal_type(nal) in PARAMETER_SET_TYPES:
                self._sets[nal_type(nal)] = nal

    @staticmethod
    def payload_starts_frame(payload: bytes) -> bool:
        raise ValueError("H.265 over RTP is not depayloaded here (RTSP sources only, through FFmpeg)")

    def depayload(self, payloads: Iterable[bytes]) -> bytes:
        raise ValueError("H.265 over RTP is not depayloaded here (RTSP sources only, through FFmpeg)")

    def prepare_keyframe(self, frame: bytes) -> bytes:
        """The key frame with the latest VPS, SPS and PPS in front where it lacks them."""
        nals = split_annexb(frame)
        self._observe(nals)
        own = {nal_type(n) for n in nals if len(n) >= 2}
        missing = [self._sets[t] for t in PARAMETER_SET_TYPES if t not in own and t in self._sets]
        if not missing:
            return frame
        head = nals[:1] if nals and len(nals[0]) >= 2 and nal_type(nals[0]) == NAL_AUD else []
        return to_annexb([*head, *missing, *nals[len(head):]])

    @staticmethod
    def keyframe_size(frame: bytes) -> tuple[int, int]:
        sps = next((n for n in split_annexb(frame) if len(n) >= 2 and nal_type(n) == NAL_SPS), None)
        if sps is None:
            raise ValueError("the H.265 key frame carries no SPS and the source gave none")
        return sps_size(sps)
