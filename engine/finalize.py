"""`recnode finalize`: a faststart MP4 from a finished fragmented one, without
re-encoding.

The node writes MP4 fragmented (an empty `moov`, then `moof`+`mdat` pairs) so
bytes reach storage while recording and a file cut short still plays. Some
players and most editors want one `moov` with the whole sample table, at the
front, with real durations: this copies every packet as it is into such a file
(FFmpeg's mp4 muxer with `movflags=faststart`). The copy is written beside the
target and renamed over it, so a reader never sees half of it.
"""

from __future__ import annotations

import os
from pathlib import Path

import av

SUFFIX = ".faststart.mp4"


class FinalizeError(Exception):
    """Why a file cannot be finalized, in one line."""


def default_output(source: Path) -> Path:
    return source.with_name(source.stem + SUFFIX)


def finalize(source: Path, target: Path) -> Path:
    """Write `target` (which may be `source` itself), a faststart MP4 with the packets
    of `source` (a fragmented MP4)."""
    partial = target.with_name(f".{target.name}.partial")
    try:
        with av.open(str(source)) as given:
            streams = [s for s in given.streams if s.type in ("video", "audio")]
            if not streams:
                raise FinalizeError(f"{source}: no audio or video stream")
            with av.open(str(partial), "w", format="mp4", options={"movflags": "+faststart"}) as out:
                copies = {s.index: out.add_stream_from_template(s) for s in streams}
                for packet in given.demux(streams):
                    if packet.dts is None:  # the demuxer's flush packet
                        continue
                    packet.stream = copies[packet.stream.index]
                    out.mux(packet)
        os.replace(partial, target)
    except av.FFmpegError as error:
        raise FinalizeError(f"{source}: {error}") from None
    finally:
        partial.unlink(missing_ok=True)
    return target
