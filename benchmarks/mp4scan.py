"""Count the video samples a fragmented MP4 already holds on disk, while it grows.

Only box headers and the small `moov` / `moof` boxes are read; `mdat` payloads are
skipped with a seek, and each call resumes where the previous one stopped, so
polling a growing file every few milliseconds is cheap. A box that is not
complete on disk yet is left for the next call.
"""

from __future__ import annotations

import os
import struct
import time

from engine.media_span import boxes, child


def video_track_id(moov: bytes) -> int | None:
    """track_ID of the first trak whose handler is 'vide'."""
    for kind, start, end in boxes(moov):
        if kind != b"trak":
            continue
        tkhd = child(moov, b"tkhd", start, end)
        mdia = child(moov, b"mdia", start, end)
        hdlr = mdia and child(moov, b"hdlr", mdia[0], mdia[1])
        if not tkhd or not hdlr:
            continue
        version = moov[tkhd[0]]
        track_id = struct.unpack_from(">I", moov, tkhd[0] + (20 if version == 1 else 12))[0]
        if moov[hdlr[0] + 8: hdlr[0] + 12] == b"vide":
            return track_id
    return None


def moof_samples(moof: bytes, track_id: int) -> int:
    """Samples of track_id in one moof (sum of its truns)."""
    count = 0
    for kind, start, end in boxes(moof):
        if kind != b"traf":
            continue
        tfhd = child(moof, b"tfhd", start, end)
        if not tfhd or struct.unpack_from(">I", moof, tfhd[0] + 4)[0] != track_id:
            continue
        for k, s, _e in boxes(moof, start, end):
            if k == b"trun":
                count += struct.unpack_from(">I", moof, s + 4)[0]
    return count


class FragmentScanner:
    """Incremental reader of one growing fragmented MP4 file."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.offset = 0
        self.track_id: int | None = None
        self.video_samples = 0
        self.first_video_mono: float | None = None  # time.monotonic() when samples were first seen
        self._pending = 0  # samples of a moof whose mdat is not complete on disk yet

    def update(self) -> int:
        """Read what was appended since the last call; returns video samples on disk."""
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return self.video_samples
        with f:
            size = os.fstat(f.fileno()).st_size
            while self.offset + 8 <= size:
                f.seek(self.offset)
                header = f.read(16)
                box_size, kind = struct.unpack_from(">I4s", header)
                if box_size == 1:
                    box_size = struct.unpack_from(">Q", header, 8)[0]
                if box_size < 8 or self.offset + box_size > size:
                    break  # not complete yet
                if kind in (b"moov", b"moof"):
                    f.seek(self.offset)
                    box = f.read(box_size)
                    inner = 16 if struct.unpack_from(">I", box)[0] == 1 else 8
                    if kind == b"moov":
                        self.track_id = video_track_id(box[inner:])
                    elif self.track_id is not None:
                        self._pending = moof_samples(box[inner:], self.track_id)
                elif kind == b"mdat":
                    self.video_samples += self._pending  # a moof counts once its media is on disk
                    self._pending = 0
                self.offset += box_size
        if self.video_samples and self.first_video_mono is None:
            self.first_video_mono = time.monotonic()
        return self.video_samples
