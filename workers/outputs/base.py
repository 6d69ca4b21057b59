"""One small base class for every container writer.

A writer receives already-encoded frames with output timestamps (video in
1/90000, audio in samples: 1/48000 for Opus) and writes them into objects of its
FileObjects. It never decodes video; AAC is written as it comes; Opus is transcoded
(to AAC, or MP3) only by writers whose container cannot hold Opus or is told not to
(MP4 with --mp4-audio aac). Codecs a container cannot take are refused here with a
ValueError, before FFmpeg could abort the process on them.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

import av

from workers.outputs.params import VIDEO_TIME_BASE, AudioParams, VideoParams, WriterOptions
from workers.outputs.transcode import AAC, AudioEncoder, Transcoder

if TYPE_CHECKING:
    from workers.sink import FileObjects


class ContainerWriter(abc.ABC):
    extension: str
    output_format: str  # as reported in RecordFiles
    video_codecs: tuple[str, ...] = ("h264", "hevc")  # H.265 in FLV: the enhanced FLV of FFmpeg >= 6.1
    audio_codecs: tuple[str, ...] = ("opus", "aac")
    keeps_opus: bool = False  # False: Opus becomes `audio_encoder`'s
    audio_encoder: AudioEncoder = AAC
    min_audio_samples: int = 0  # transcoded audio shorter than this is padded with silence

    def __init__(self, objects: FileObjects, stem: str, video: VideoParams | None, audio: AudioParams | None,
                 options: WriterOptions = WriterOptions()):
        if video is not None and video.codec not in self.video_codecs:
            raise ValueError(f"{self.output_format} cannot hold {video.codec} video")
        if audio is not None and audio.codec not in self.audio_codecs:
            raise ValueError(f"{self.output_format} cannot hold {audio.codec} audio")
        self.objects = objects
        self.options = options
        self.stem = stem
        self.name = f"{stem}.{self.extension}"
        self.video = video
        self.audio = audio
        self._audio_time_base = audio.time_base if audio is not None else None  # made once, not per packet
        self.container = self._open_container()
        self._video_stream = None
        self._audio_stream = None
        self._transcoder = None
        if video is not None:
            self._video_stream = self.container.add_mux_stream(video.codec, width=video.width, height=video.height)
            self._video_stream.time_base = VIDEO_TIME_BASE
        if audio is not None:
            if self._keeps(audio.codec):
                # Written as it comes: an encoder's stream is the one PyAV muxes correctly
                # (with the codec's extradata); its encoder is never fed.
                stream = self.container.add_stream(audio.codec, rate=audio.sample_rate)
                stream.codec_context.layout = "stereo" if audio.channels == 2 else "mono"
                stream.codec_context.extradata = audio.extradata
                stream.time_base = audio.time_base
                self._audio_stream = stream
            else:
                self._transcoder = Transcoder(self.container, audio, self.audio_encoder)

    def _keeps_opus(self) -> bool:
        return self.keeps_opus

    def _keeps(self, codec: str) -> bool:
        """Whether audio in `codec` is written as it comes (else `audio_encoder` makes it)."""
        return self._keeps_opus() if codec == "opus" else codec == self.audio_encoder.codec
    @property
    def key(self) -> str:
        return self.objects.key(self.name)

    @property
    def url(self) -> str:
        return self.objects.url(self.name)

    @abc.abstractmethod
    def _open_container(self) -> av.container.OutputContainer: ...

    def _mux(self, stream, data: bytes, pts: int, time_base, keyframe: bool, duration: int | None) -> None:
        packet = av.Packet(data)
        packet.stream = stream
        packet.time_base = time_base
        packet.pts = packet.dts = pts
        packet.is_keyframe = keyframe
        if duration:
            packet.duration = duration
        self.container.mux(packet)

    def write_video(self, data: bytes, pts: int, keyframe: bool) -> None:
        """One video frame (H.264: an Annex-B access unit; VP8: the frame), pts in VIDEO_TIME_BASE."""
        self._mux(self._video_stream, data, pts, VIDEO_TIME_BASE, keyframe, None)

    def write_audio(self, data: bytes, pts: int, duration: int) -> None:
        """One Opus packet or AAC frame, pts and duration in samples (`AudioParams.time_base`)."""
        if self._transcoder is not None:
            self._transcoder.write(data, pts)
        else:
            self._mux(self._audio_stream, data, pts, self._audio_time_base, True, duration)

    def keyframe_due(self) -> bool:
        """Whether the container needs a key frame it has not had (HLS: to cut a segment)."""
        return False

    def close(self) -> None:
        """Write what is buffered and the trailer; objects are closed by their FileObjects."""
        try:
            if self._transcoder is not None:
                self._transcoder.close(self.min_audio_samples)
        finally:
            self.container.close()
            self._finish()

    def _finish(self) -> None:
        """After the trailer: anything a container writes last (HLS: the final playlist)."""


class SingleObjectWriter(ContainerWriter):
    """A container written front to back into one object."""

    container_format: str

    def container_options(self) -> dict[str, str]:
        return {}

    def _open_container(self) -> av.container.OutputContainer:
        self.out = self.objects.open(self.name)
        return av.open(self.out, "w", format=self.container_format, options=self.container_options())
