"""Fragmented MP4: H.264 as sent, Opus as sent (with its OpusHead).

Fragments are cut on key frames and at least every FRAGMENT_DURATION_US, so the
bytes reach storage while recording and a file cut short still plays up to the
cut.
"""

from __future__ import annotations

import av

from engine.defaults import FRAGMENT_DURATION_US
from workers.outputs.base import AUDIO_TIME_BASE, VIDEO_TIME_BASE, ContainerWriter

MP4_OPTIONS = {
    "movflags": "frag_keyframe+empty_moov+default_base_moof",
    "frag_duration": str(FRAGMENT_DURATION_US),
    # Do not hold one track back for long waiting for the other to interleave.
    "max_interleave_delta": str(FRAGMENT_DURATION_US),
}


class FragmentedMp4Writer(ContainerWriter):
    extension = "mp4"
    output_format = "mp4"

    def __init__(self, out, video, audio):
        super().__init__(out, video, audio)
        self._container = av.open(out, "w", format="mp4", options=dict(MP4_OPTIONS))
        self._video_stream = None
        self._audio_stream = None
        if video is not None:
            stream = self._container.add_mux_stream(video.codec, width=video.width, height=video.height)
            stream.time_base = VIDEO_TIME_BASE
            self._video_stream = stream
        if audio is not None:
            stream = self._container.add_stream(audio.codec, rate=audio.sample_rate)
            stream.codec_context.layout = "stereo" if audio.channels == 2 else "mono"
            stream.codec_context.extradata = audio.extradata
            stream.time_base = AUDIO_TIME_BASE
            self._audio_stream = stream

    def _mux(self, stream, data: bytes, pts: int, time_base, keyframe: bool, duration: int | None) -> None:
        packet = av.Packet(data)
        packet.stream = stream
        packet.time_base = time_base
        packet.pts = packet.dts = pts
        packet.is_keyframe = keyframe
        if duration:
            packet.duration = duration
        self._container.mux(packet)

    def write_video(self, data: bytes, pts: int, keyframe: bool) -> None:
        self._mux(self._video_stream, data, pts, VIDEO_TIME_BASE, keyframe, None)

    def write_audio(self, data: bytes, pts: int, duration: int) -> None:
        self._mux(self._audio_stream, data, pts, AUDIO_TIME_BASE, True, duration)

    def close(self) -> None:
        self._container.close()
