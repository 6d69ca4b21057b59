"""One task's recording of one stream: the file, its timeline, its progress.

The timeline of a file is latched when it opens: the origin is the media time
of its first key frame and each track's offset from it is fixed by its first
frame (on the clock basis the stream had then). From there each track advances
by its own RTP timestamps, so the file's timeline never jumps.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import av
import structlog

from storage_adapters.base import StorageAdapter, StorageError, StorageFull, StorageTarget
from storage_adapters.vendors import adapter_for
from workers import naming, protocol
from workers.clock import Basis, StreamClock
from workers.codecs import h264, opus
from workers.config import RecordingSpec, StreamSpec
from workers.frames import EncodedFrame, MediaKind
from workers.outputs.base import AudioParams, ContainerWriter, VideoParams
from workers.outputs.mp4 import FragmentedMp4Writer
from workers.sink import StreamingObject

log = structlog.get_logger("recording")

WRITERS: dict[str, type[ContainerWriter]] = {"mp4": FragmentedMp4Writer}
OUT_RATES = {MediaKind.VIDEO: 90000, MediaKind.AUDIO: 48000}
QUIT_FAILED_TO_OPEN = 1003
QUIT_DISK_FULL = 1004
QUIT_UNKNOWN = 1001
MAX_CONSECUTIVE_MUX_ERRORS = 50


class State(enum.Enum):
    PENDING = "pending"  # waiting for the clock to settle or for a key frame
    ACTIVE = "active"
    CLOSED = "closed"


@dataclass
class _Timeline:
    clock_rate: int
    out_rate: int
    first_rtp: int
    first_pts: int
    last_pts: int
    last_duration: int = 0

    def pts(self, rtp: int) -> int:
        return self.first_pts + (rtp - self.first_rtp) * self.out_rate // self.clock_rate

    @property
    def end(self) -> float:
        return (self.last_pts + self.last_duration) / self.out_rate


class Recording:
    def __init__(self, spec: RecordingSpec, stream: StreamSpec, clock: StreamClock, uploader: ThreadPoolExecutor,
                 emit: Callable[[protocol.Event], None], wallclock: Callable[[], float] = time.time,
                 adapters: Callable[[StorageTarget], StorageAdapter] = adapter_for):
        self.spec = spec
        self.stream = stream
        self._clock = clock
        self._uploader = uploader
        self._emit = emit
        self._wallclock = wallclock
        self._adapters = adapters
        self.video_spec = stream.track(MediaKind.VIDEO) if spec.stream_type in (2, 3) else None
        self.audio_spec = stream.track(MediaKind.AUDIO) if spec.stream_type in (1, 3) else None
        self.state = State.PENDING
        self._writer: ContainerWriter | None = None
        self._out: StreamingObject | None = None
        self._basis = Basis.ARRIVAL
        self._origin = 0.0
        self._timelines: dict[MediaKind, _Timeline] = {}
        self._mux_errors = 0
        self.dropped_frames = 0
        self.file_id = ""
        self._log = log.bind(task_id=spec.task_id, stream_id=stream.stream_id, room_id=stream.room_id)

    @property
    def needs_keyframe(self) -> bool:
        return self.state is State.PENDING and self.video_spec is not None

    @property
    def media_track_type(self) -> int:
        return (1 if self.audio_spec else 0) | (2 if self.video_spec else 0)

    def begin(self, frames: list[EncodedFrame], now: float) -> bool:
        """Open the file at the first usable frame of `frames` and write them all.
        Returns False (and stays pending) when there is nothing to start on."""
        first = self._first_frame(frames)
        if first is None:
            return False
        self._basis = self._clock.basis()
        self._origin = self._clock.media_time(first.kind, first.rtp_timestamp, self._basis)
        begin_ms = int((self._wallclock() - (now - first.arrival)) * 1000)
        if not self._open(first, begin_ms):
            return True
        self.state = State.ACTIVE
        start = frames.index(first)
        for frame in frames[:start]:
            if frame.kind is MediaKind.AUDIO:
                self.write(frame)  # audio that arrived early but belongs after the origin
        for frame in frames[start:]:
            self.write(frame)
        return True

    def _first_frame(self, frames: list[EncodedFrame]) -> EncodedFrame | None:
        if self.video_spec is not None:
            return next((f for f in frames if f.kind is MediaKind.VIDEO and f.keyframe), None)
        return next((f for f in frames if f.kind is MediaKind.AUDIO), None)

    def _open(self, first: EncodedFrame, begin_ms: int) -> bool:
        video = audio = None
        if self.video_spec is not None:
            sps = next((n for n in h264.split_annexb(first.data) if h264.nal_type(n) == h264.NAL_SPS), None)
            if sps is None:
                self._fail(QUIT_FAILED_TO_OPEN, "the first key frame carries no SPS and the SDP gave none")
                return False
            info = h264.parse_sps(sps)
            video = VideoParams("h264", info.width, info.height)
        if self.audio_spec is not None:
            channels = self.audio_spec.channels
            audio = AudioParams("opus", opus.SAMPLE_RATE, channels, opus.opus_head(channels))
        writer_type = WRITERS[self.spec.output_format]
        name = naming.file_name(task_id=self.spec.task_id, room_id=self.stream.room_id,
                                user_id=self.stream.user_id, stream_id=self.stream.stream_id,
                                media_track_type=self.media_track_type, begin_ms=begin_ms,
                                extension=writer_type.extension)
        key = naming.object_key(self.spec.output_folder, name)
        try:
            adapter = self._adapters(self.spec.storage)
            self._out = StreamingObject(adapter.open_object(key), self._uploader)
            self._writer = writer_type(self._out, video, audio)
        except (StorageError, av.FFmpegError, ValueError) as error:
            self._fail(QUIT_DISK_FULL if isinstance(error, StorageFull) else QUIT_FAILED_TO_OPEN,
                       f"cannot open {key}: {error}")
            return False
        self.file_id = key
        self._emit(protocol.FileOpened(
            task_id=self.spec.task_id, file_id=key, file_url=adapter.object_url(key),
            output_format=writer_type.output_format, media_track_type=self.media_track_type,
            begin_ms=begin_ms, width=video.width if video else 0, height=video.height if video else 0,
        ))
        self._log.info("file_opened", file_id=key, basis=self._basis.value)
        return True

    def write(self, frame: EncodedFrame) -> None:
        if self.state is not State.ACTIVE:
            return
        spec = self.video_spec if frame.kind is MediaKind.VIDEO else self.audio_spec
        if spec is None:
            return
        timeline = self._timelines.get(frame.kind)
        if timeline is None:
            timeline = self._start_timeline(frame, spec.clock_rate)
            if timeline is None:
                return
            pts = timeline.first_pts
        else:
            pts = timeline.pts(frame.rtp_timestamp)
            if pts <= timeline.last_pts:
                self.dropped_frames += 1  # a timestamp going back: never write a non-monotonic track
                return
        self._mux(frame, timeline, pts)

    def _start_timeline(self, frame: EncodedFrame, clock_rate: int) -> _Timeline | None:
        media_time = self._clock.media_time(frame.kind, frame.rtp_timestamp, self._basis)
        out_rate = OUT_RATES[frame.kind]
        first_pts = round((media_time - self._origin) * out_rate)
        if first_pts < 0:
            return None  # from before the file's first key frame
        timeline = _Timeline(clock_rate, out_rate, frame.rtp_timestamp, first_pts, first_pts - 1)
        self._timelines[frame.kind] = timeline
        return timeline

    def _mux(self, frame: EncodedFrame, timeline: _Timeline, pts: int) -> None:
        assert self._writer is not None and self._out is not None
        try:
            if frame.kind is MediaKind.VIDEO:
                self._writer.write_video(frame.data, pts, frame.keyframe)
                duration = pts - timeline.last_pts if timeline.last_pts >= timeline.first_pts else 0
            else:
                duration = opus.packet_samples(frame.data)
                self._writer.write_audio(frame.data, pts, duration)
        except (av.FFmpegError, ValueError) as error:
            self._mux_errors += 1
            self.dropped_frames += 1
            if self._mux_errors >= MAX_CONSECUTIVE_MUX_ERRORS:
                self._fail(QUIT_UNKNOWN, f"the muxer keeps failing: {error}")
            return
        self._mux_errors = 0
        timeline.last_pts = pts
        if duration:
            timeline.last_duration = duration
        self._out.pump()

    @property
    def duration_ms(self) -> int:
        if not self._timelines:
            return 0
        return int(max(t.end for t in self._timelines.values()) * 1000)

    def progress(self) -> protocol.FileProgress | None:
        if self._out is not None and self._out.error is not None and self.state is State.ACTIVE:
            error = self._out.error
            self._fail(QUIT_DISK_FULL if isinstance(error, StorageFull) else QUIT_FAILED_TO_OPEN,
                       f"storage failed: {error}")
        if self.state is not State.ACTIVE or self._out is None:
            return None
        return protocol.FileProgress(self.spec.task_id, self.file_id, self._out.durable_bytes, self.duration_ms)

    def _fail(self, quit_reason: int, message: str) -> None:
        self._log.error("recording_failed", quit_reason=quit_reason, message=message)
        self._emit(protocol.RecordingFailed(self.spec.task_id, quit_reason, message))
        self._close_writer()

    def _close_writer(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except (av.FFmpegError, ValueError) as error:
                self._log.warning("trailer_failed", error=str(error))
            self._writer = None
        self.state = State.CLOSED

    async def close(self) -> None:
        """Finish the file and wait until storage holds all of it."""
        was_open = self._out is not None
        self._close_writer()
        if not was_open:
            return
        assert self._out is not None
        info = await asyncio.wrap_future(self._out.close())
        error = self._out.error
        self._emit(protocol.FileClosed(
            task_id=self.spec.task_id, file_id=self.file_id,
            size=info.size if info else self._out.durable_bytes, duration_ms=self.duration_ms,
            ok=info is not None, sha256=info.sha256 if info else "", error=str(error) if error else "",
        ))
        self._log.info("file_closed", file_id=self.file_id, size=self._out.durable_bytes,
                       duration_ms=self.duration_ms, ok=info is not None)
