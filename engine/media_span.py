"""How long stored media lasts, read from its container without decoding.

* Fragmented MP4: each fragment's moof says where its samples start (tfdt) and
  how long each lasts (trun, or the defaults of tfhd / trex); only samples whose
  bytes are all stored count (a file cut short ends at its last whole sample).
  Box headers are walked from the start; a finished file's mfra index lets the
  walk jump to its last fragments.
* MPEG-TS (HLS segments): the PTS in PES headers; a segment's last PES lasts as
  long as the one before it (a video frame; our muxer writes one AAC frame per PES).
* Anything else FFmpeg reads (FLV, WebM, ADTS): PyAV demuxes packets (no
  decoding); each track ends at its last packet's pts + duration.

Every function reads through a `Readable` (storage_adapters.readback.StoredObject).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import av


class Readable(Protocol):
    size: int

    def read(self, start: int, length: int) -> bytes: ...


@dataclass(frozen=True)
class Span:
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return max(0.0, self.end_s - self.start_s)


# Fragmented MP4 ---------------------------------------------------------------
MAX_BOX_READ = 16 * 1024 * 1024  # a moov, moof or mfra larger than this is not what our muxer writes


@dataclass
class _Track:
    timescale: int = 0
    default_duration: int = 0
    default_size: int = 0
    start: int | None = None  # decode time of its first sample, in its timescale
    end: int | None = None  # after its last whole sample


def boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) of the ISO BMFF boxes in data[start:end] (a
    box running past `end` ends the list)."""
    end = len(data) if end is None else end
    while start + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, start)
        header = 8
        if size == 1 and start + 16 <= end:
            size, header = struct.unpack_from(">Q", data, start + 8)[0], 16
        elif size == 0:
            size = end - start
        if size < header or start + size > end:
            return
        yield kind, start + header, start + size
        start += size


def child(data: bytes, kind: bytes, start: int = 0, end: int | None = None) -> tuple[int, int] | None:
    return next(((s, e) for k, s, e in boxes(data, start, end) if k == kind), None)


def _parse_moov(moov: bytes, tracks: dict[int, _Track]) -> None:
    for kind, start, end in boxes(moov):
        if kind == b"trak":
            tkhd, mdia = child(moov, b"tkhd", start, end), child(moov, b"mdia", start, end)
            mdhd = mdia and child(moov, b"mdhd", *mdia)
            if tkhd is None or mdhd is None:
                continue
            wide = moov[tkhd[0]] == 1  # version 1: 64-bit times before the track id
            track_id = struct.unpack_from(">I", moov, tkhd[0] + (20 if wide else 12))[0]
            wide = moov[mdhd[0]] == 1
            tracks.setdefault(track_id, _Track()).timescale = \
                struct.unpack_from(">I", moov, mdhd[0] + (20 if wide else 12))[0]
        elif kind == b"mvex":
            for sub, s, _ in boxes(moov, start, end):
                if sub == b"trex":
                    track_id, _, duration, size = struct.unpack_from(">IIII", moov, s + 4)
                    track = tracks.setdefault(track_id, _Track())
                    track.default_duration, track.default_size = duration, size


def _parse_moof(moof: bytes, moof_at: int, stored: int, tracks: dict[int, _Track]) -> None:
    """Each traf's samples: a track's end moves past every sample whose bytes are stored."""
    for kind, start, end in boxes(moof):
        if kind != b"traf":
            continue
        tfhd = child(moof, b"tfhd", start, end)
        if tfhd is None:
            continue
        flags = struct.unpack_from(">I", moof, tfhd[0])[0] & 0xFFFFFF
        track_id = struct.unpack_from(">I", moof, tfhd[0] + 4)[0]
        track = tracks.setdefault(track_id, _Track())
        at = tfhd[0] + 8
        base = moof_at
        if flags & 0x01:
            base = struct.unpack_from(">Q", moof, at)[0]
            at += 8
        at += 4 if flags & 0x02 else 0
        duration, size = track.default_duration, track.default_size
        if flags & 0x08:
            duration = struct.unpack_from(">I", moof, at)[0]
            at += 4
        if flags & 0x10:
            size = struct.unpack_from(">I", moof, at)[0]
        tfdt = child(moof, b"tfdt", start, end)
        if tfdt is None:
            continue
        time = struct.unpack_from(">Q" if moof[tfdt[0]] == 1 else ">I", moof, tfdt[0] + 4)[0]
        if track.start is None:
            track.start = time
        for sub, s, _ in boxes(moof, start, end):
            if sub == b"trun":
                time = _run(moof, s, base, time, duration, size, stored, track)


def _run(moof: bytes, at: int, base: int, time: int, duration: int, size: int, stored: int, track: _Track) -> int:
    flags = struct.unpack_from(">I", moof, at)[0] & 0xFFFFFF
    count = struct.unpack_from(">I", moof, at + 4)[0]
    at += 8
    data = base
    if flags & 0x001:
        data += struct.unpack_from(">i", moof, at)[0]
        at += 4
    at += 4 if flags & 0x004 else 0
    for _ in range(count):
        sample_duration, sample_size = duration, size
        if flags & 0x100:
            sample_duration = struct.unpack_from(">I", moof, at)[0]
            at += 4
        if flags & 0x200:
            sample_size = struct.unpack_from(">I", moof, at)[0]
            at += 4
        at += (4 if flags & 0x400 else 0) + (4 if flags & 0x800 else 0)
        data += sample_size
        if data > stored:
            break  # cut short: this sample and the rest were never stored whole
        time += sample_duration
        track.end = time
    return time


def _last_fragments_at(obj: Readable) -> int | None:
    """A finished file ends with mfra + mfro: the offset of the earliest of each
    track's last indexed moof (every later fragment is walked from there)."""
    if obj.size < 16:
        return None
    mfro = obj.read(obj.size - 16, 16)
    if mfro[4:8] != b"mfro":
        return None
    mfra_size = struct.unpack_from(">I", mfro, 12)[0]
    if not 16 <= mfra_size <= min(obj.size, MAX_BOX_READ):
        return None
    mfra = obj.read(obj.size - mfra_size, mfra_size)
    last: list[int] = []
    for kind, start, _ in boxes(mfra, 8):
        if kind != b"tfra":
            continue
        wide = mfra[start] == 1
        sizes = struct.unpack_from(">I", mfra, start + 8)[0]
        entries = struct.unpack_from(">I", mfra, start + 12)[0]
        if not entries:
            continue
        entry = (16 if wide else 8) + sum(((sizes >> shift) & 3) + 1 for shift in (4, 2, 0))
        at = start + 16 + (entries - 1) * entry
        last.append(struct.unpack_from(">QQ" if wide else ">II", mfra, at)[1])
    return min(last) if last else None


def fmp4_span(obj: Readable) -> Span | None:
    tracks: dict[int, _Track] = {}
    at, jumped = 0, False
    while at + 8 <= obj.size:
        head = obj.read(at, 16)
        size, kind = struct.unpack_from(">I4s", head)
        header = 8
        if size == 1:
            size, header = struct.unpack_from(">Q", head, 8)[0], 16
        elif size == 0:
            size = obj.size - at
        if size < header:
            break
        if kind in (b"moov", b"moof"):
            if at + size > obj.size or size > MAX_BOX_READ:
                break  # cut short inside it: nothing after it is whole
            box = obj.read(at + header, size - header)
            if kind == b"moov":
                _parse_moov(box, tracks)
            else:
                _parse_moof(box, at, obj.size, tracks)
                if not jumped:  # the first fragment gave each track its start
                    jumped = True
                    resume = _last_fragments_at(obj)
                    if resume is not None and resume > at:
                        at = resume
                        continue
        elif kind == b"mfra":
            break
        at += size
    timed = [t for t in tracks.values() if t.timescale and t.start is not None and t.end is not None]
    if not timed:
        return None
    return Span(min(t.start / t.timescale for t in timed), max(t.end / t.timescale for t in timed))


# MPEG-TS ------------------------------------------------------------------------
TS_PACKET = 188
PTS_HZ = 90000
TS_HEAD_SCAN = 512 * 1024  # how far into a segment its first video PES is looked for
TS_SCAN_STEP = 43 * TS_PACKET  # within readback.FIRST_FETCH: the segment's first read serves it


def _is_video(stream_id: int) -> bool:
    return 0xE0 <= stream_id <= 0xEF


def _is_audio(stream_id: int) -> bool:
    return 0xC0 <= stream_id <= 0xDF


def _ts_payloads(data: bytes) -> Iterator[tuple[int, bool, bytes]]:
    """(pid, starts a PES, payload) of each whole TS packet."""
    for at in range(0, len(data) - TS_PACKET + 1, TS_PACKET):
        if data[at] != 0x47:
            return
        pid = ((data[at + 1] & 0x1F) << 8) | data[at + 2]
        control = (data[at + 3] >> 4) & 3
        start = at + 4 + (1 + data[at + 4] if control & 2 else 0)
        if control & 1 and start < at + TS_PACKET:
            yield pid, bool(data[at + 1] & 0x40), data[start:at + TS_PACKET]


def _pes_pts(payload: bytes) -> tuple[int, int | None]:
    """(stream id, PTS in 1/90000 s or None) of a PES header."""
    if len(payload) < 14 or payload[:3] != b"\x00\x00\x01" or not payload[7] & 0x80:
        return -1, None
    p = payload[9:14]
    return payload[3], ((p[0] >> 1) & 7) << 30 | p[1] << 22 | (p[2] >> 1) << 15 | p[3] << 7 | p[4] >> 1


def ts_start_s(obj: Readable) -> float | None:
    """Where a segment starts: its first video PES (its first audio one without video).
    Read from the head on, a few packets at a time: the first PES is near it."""
    first_audio, at = None, 0
    while at < min(obj.size, TS_HEAD_SCAN):
        data = obj.read(at, TS_SCAN_STEP)
        data = data[:len(data) - len(data) % TS_PACKET]
        if not data:
            break
        for _, starts, payload in _ts_payloads(data):
            stream_id, pts = _pes_pts(payload) if starts else (-1, None)
            if pts is not None and _is_video(stream_id):
                return pts / PTS_HZ
            if pts is not None and _is_audio(stream_id) and first_audio is None:
                first_audio = pts / PTS_HZ
        at += len(data)
    return first_audio


@dataclass
class _Pes:
    audio: bool
    times: list[int] = field(default_factory=list)

    def end_s(self) -> float:
        last = self.times[-1]
        return (last + (last - self.times[-2] if len(self.times) > 1 else 0)) / PTS_HZ


def ts_span(obj: Readable) -> Span | None:
    """A whole segment's span: from ts_start_s to the end of its last video frame
    (of its audio without video)."""
    streams: dict[int, _Pes] = {}
    for pid, starts, payload in _ts_payloads(obj.read(0, obj.size)):
        stream_id, pts = _pes_pts(payload) if starts else (-1, None)
        if pts is not None and (_is_video(stream_id) or _is_audio(stream_id)):
            streams.setdefault(pid, _Pes(audio=_is_audio(stream_id))).times.append(pts)
    start = ts_start_s(obj)
    if start is None or not streams:
        return None
    # as FFmpeg's playlist counts a segment: by its video when it has video
    reference = [s for s in streams.values() if not s.audio] or list(streams.values())
    return Span(start, max(s.end_s() for s in reference))


# anything PyAV demuxes ------------------------------------------------------------
class _ReadableFile(io.RawIOBase):
    def __init__(self, obj: Readable):
        self._obj = obj
        self._at = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._obj.read(self._at, len(buffer))
        buffer[:len(data)] = data
        self._at += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._at = {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: self._obj.size}[whence] + offset
        return self._at

    def tell(self) -> int:
        return self._at


def demuxed_span(obj: Readable) -> Span | None:
    starts: list[float] = []
    ends: dict[int, float] = {}
    try:
        with av.open(_ReadableFile(obj), "r") as container:
            for packet in container.demux():
                if packet.pts is None or packet.time_base is None:
                    continue
                at = float(packet.pts * packet.time_base)
                if packet.stream.index not in ends:
                    starts.append(at)
                end = at + float((packet.duration or 0) * packet.time_base)
                ends[packet.stream.index] = max(ends.get(packet.stream.index, end), end)
    except av.FFmpegError:
        pass  # a file cut short: what was demuxed before the cut counts
    return Span(min(starts), max(ends.values())) if starts else None
