"""What is inside encoded media, compared without decoding: H.264 and H.265 NAL units
(Annex-B and length-prefixed), Opus packets, AAC frames and VP8 frames, from encoders'
output or from recorded files (demuxed with PyAV, not decoded)."""

from __future__ import annotations

import os
from typing import Iterable

import av

NAL_SLICE = 1
NAL_IDR = 5
NAL_SPS = 7
NAL_PPS = 8
SLICE_NAL_TYPES = (NAL_SLICE, NAL_IDR)
START_CODE = b"\x00\x00\x00\x01"


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex-B byte stream, without start codes.

    Trailing zero bytes before a start code (trailing_zero_8bits / the first
    byte of a 4-byte start code) are stripped.
    """
    nals = []
    starts = []
    pos = data.find(b"\x00\x00\x01")
    while pos != -1:
        starts.append(pos + 3)
        pos = data.find(b"\x00\x00\x01", pos + 3)
    for i, start in enumerate(starts):
        end = starts[i + 1] - 3 if i + 1 < len(starts) else len(data)
        nal = data[start:end].rstrip(b"\x00")
        if nal:
            nals.append(nal)
    return nals


def annexb(nals: Iterable[bytes]) -> bytes:
    """NAL units joined into an Annex-B access unit (4-byte start codes)."""
    return b"".join(START_CODE + n for n in nals)


def nal_type(nal: bytes) -> int:
    return nal[0] & 0x1F


def without_parameter_sets(access_unit: bytes) -> bytes:
    """An Annex-B access unit without its SPS and PPS."""
    return annexb(n for n in split_annexb(access_unit) if nal_type(n) not in (NAL_SPS, NAL_PPS))


def opus_pre_skip(opus_head: bytes) -> int:
    """Pre-skip field of an OpusHead (RFC 7845 section 5.1)."""
    if opus_head[:8] != b"OpusHead":
        raise ValueError("not an OpusHead")
    return int.from_bytes(opus_head[10:12], "little")


def _avcc_length_size(extradata: bytes | None) -> int | None:
    """NAL length-prefix size from an avcC record, None if not avcC (Annex-B)."""
    if extradata and len(extradata) >= 5 and extradata[0] == 1:
        return (extradata[4] & 0x03) + 1
    return None


def split_length_prefixed(data: bytes, length_size: int) -> list[bytes]:
    """NAL units of an AVCC (length-prefixed) sample."""
    nals, pos = [], 0
    while pos + length_size <= len(data):
        size = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        nals.append(data[pos : pos + size])
        pos += size
    return nals


def _slice_nals(nals: Iterable[bytes]) -> list[bytes]:
    return [n for n in nals if n and nal_type(n) in SLICE_NAL_TYPES]


def _stream_packets(path: str | os.PathLike, kind: str) -> tuple[bytes | None, list[bytes]]:
    """(codec extradata, payloads of every non-empty packet) of the first stream of kind."""
    with av.open(os.fspath(path)) as container:
        streams = getattr(container.streams, kind)
        if not streams:
            return None, []
        stream = streams[0]
        extradata = stream.codec_context.extradata
        payloads = [bytes(p) for p in container.demux(stream) if p.size]
    return (bytes(extradata) if extradata else None), payloads


def _hvcc_length_size(extradata: bytes | None) -> int | None:
    """NAL length-prefix size from an hvcC record, None if not hvcC (Annex-B)."""
    if extradata and len(extradata) >= 23 and extradata[0] == 1:
        return (extradata[21] & 0x03) + 1
    return None


def hevc_nal_type(nal: bytes) -> int:
    return (nal[0] >> 1) & 0x3F


def hevc_slice_nals(nals: Iterable[bytes]) -> list[bytes]:
    """H.265 slice segments (VCL NAL unit types 0-31)."""
    return [n for n in nals if n and hevc_nal_type(n) < 32]


def hevc_slice_nals_from_file(path: str | os.PathLike) -> list[bytes]:
    """H.265 slice NAL units of the file's first video stream, in file order."""
    return hevc_slice_nals(_video_nals(path, _hvcc_length_size))


def h264_slice_nals_from_file(path: str | os.PathLike) -> list[bytes]:
    """Slice NAL units (types 1 and 5), without start codes or length prefixes,
    of the file's first video stream, in file order."""
    return _slice_nals(_video_nals(path, _avcc_length_size))


def _video_nals(path: str | os.PathLike, length_size_of) -> list[bytes]:
    extradata, payloads = _stream_packets(path, "video")
    length_size = length_size_of(extradata)
    nals: list[bytes] = []
    for payload in payloads:
        if length_size is None:
            nals.extend(split_annexb(payload))
        else:
            nals.extend(split_length_prefixed(payload, length_size))
    return nals


def h264_slice_nals_from_aus(aus: Iterable[bytes]) -> list[bytes]:
    """Slice NAL units of Annex-B access units (e.g. ``[au.data for au in media.video]``)."""
    return _slice_nals(nal for au in aus for nal in split_annexb(au))


def opus_packets_from_file(path: str | os.PathLike) -> list[bytes]:
    """Payloads of the first audio stream's packets, in file order."""
    return _stream_packets(path, "audio")[1]


def aac_frames_from_file(path: str | os.PathLike) -> list[bytes]:
    """Raw AAC frames of the first audio stream (an ADTS header, as .aac and MPEG-TS
    carry, taken off), in file order."""
    frames = []
    for payload in _stream_packets(path, "audio")[1]:
        if len(payload) > 7 and payload[0] == 0xFF and payload[1] & 0xF0 == 0xF0:
            payload = payload[7 if payload[1] & 0x01 else 9:]
        frames.append(payload)
    return frames


def vp8_frames_from_file(path: str | os.PathLike) -> list[bytes]:
    """Payloads of the first video stream's packets (VP8: whole frames), in file order."""
    return _stream_packets(path, "video")[1]
