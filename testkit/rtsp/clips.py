"""What the test RTSP servers serve: MPEG-TS files of the test clip. (Not Matroska: it
would carry the AAC encoder's delay as CodecDelay, which FFmpeg trims when it decodes
the file but no RTP stream carries, so the served audio would not be what the file
plays; in MPEG-TS each AAC frame simply has its time.)

``h264_aac_clip``: the H.264 of ``testkit.media.make_test_media`` (as encoded, so a
recording can be compared slice by slice) with its sound encoded as AAC-LC by PyAV
(48 kHz mono, 1024-sample frames; the frames are kept for comparison too).
``hevc_clip``: an H.265 clip (Debian's FFmpeg with libx265: PyAV's wheel has no H.265
encoder), 30 fps, a key frame every 30 frames, no B-frames, parameter sets on every key
frame, with AAC audio.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from testkit import bitstream
from testkit.media import make_test_media

AAC_FRAME = 1024


@dataclass(frozen=True)
class Clip:
    path: Path
    video_slices: list[bytes]  # every slice NAL unit, in order
    audio_frames: list[bytes]  # raw AAC frames, in order
    duration_s: float


def _aac_frames(pcm: np.ndarray) -> tuple[list[av.Packet], bytes]:
    encoder = av.CodecContext.create("aac", "w")
    encoder.sample_rate, encoder.layout, encoder.format = 48000, "mono", "fltp"
    encoder.time_base = Fraction(1, 48000)
    encoder.open()
    packets = []
    for start in range(0, len(pcm) - AAC_FRAME + 1, AAC_FRAME):
        frame = av.AudioFrame.from_ndarray(pcm[None, start:start + AAC_FRAME].astype(np.float32), format="fltp",
                                           layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 48000, start, Fraction(1, 48000)
        packets.extend(encoder.encode(frame))
    packets.extend(encoder.encode(None))
    return packets, bytes(encoder.extradata)


def h264_aac_clip(directory: Path, duration_s: float = 6.0) -> Clip:
    media = make_test_media(duration_s=duration_s)
    path = directory / f"h264-aac-{duration_s:g}.ts"
    packets, config = _aac_frames(media.pcm)
    if not path.exists():
        with av.open(str(path), "w", format="mpegts") as out:
            video = out.add_mux_stream("h264", rate=media.fps, width=media.width, height=media.height)
            audio = out.add_stream("aac", rate=48000, layout="mono")
            audio.codec_context.extradata = config
            events = [(au.time_s, 0, au) for au in media.video] + \
                     [(float(p.pts * p.time_base), 1, p) for p in packets if p.pts is not None]
            for _, kind, item in sorted(events, key=lambda e: (e[0], e[1])):
                if kind == 0:
                    packet = av.Packet(item.data)
                    packet.stream, packet.time_base = video, Fraction(1, 90000)
                    packet.pts = packet.dts = round(item.time_s * 90000) + 90000  # all positive
                    packet.is_keyframe = item.keyframe
                else:
                    packet = av.Packet(bytes(item))
                    packet.stream, packet.time_base = audio, Fraction(1, 48000)
                    packet.pts = packet.dts = item.pts + 48000  # the first one is the encoder's priming
                    packet.duration = AAC_FRAME
                out.mux(packet)
    return Clip(path, bitstream.h264_slice_nals_from_aus(au.data for au in media.video),
                [bytes(p) for p in packets], media.duration_s)


def hevc_clip(directory: Path, duration_s: float = 6.0) -> Clip:
    path = directory / f"hevc-{duration_s:g}.ts"
    if not path.exists():
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
             "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000", "-t", f"{duration_s:g}",
             "-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
             "-x265-params", "keyint=30:min-keyint=30:scenecut=0:bframes=0:repeat-headers=1:log-level=error",
             "-c:a", "aac", "-ac", "1", "-f", "mpegts", str(path)], check=True)
    return Clip(path, bitstream.hevc_slice_nals_from_file(path), bitstream.aac_frames_from_file(path), duration_s)
