"""One task's recording of one stream: its file(s), their timeline, progress.

The timeline is latched when the recording opens: the origin is the media time
of its first key frame and each track's offset from it is fixed by its first
frame (on the clock basis the stream had then). From there each track advances
by its own RTP timestamps, so a file's timeline never jumps. Which files and
writers a recording has is `workers.outputs.registry`'s. Muted audio left out of
an mp3 (RecordMuteAudio 2, `workers.mute`) is cut from the timeline as a pause is.
Audio is Opus (WebRTC, RTP, RTSP) or AAC-LC (RTSP); its timestamps count samples.
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

from contract import protocol
from contract.codes import MediaKind, QuitReason
from contract.storage import DestinationSpec
from contract.tuning import FRAGMENT_DURATION_US
from contract.worker import RecordingSpec, StreamSpec
from storage_adapters.base import StorageAdapter, StorageError, StorageFull
from storage_adapters.destination import Destination
from workers import naming
from workers.clock import Basis, StreamClock
from workers.codecs import video_codec
from workers.frames import EncodedFrame
from workers.mute import MuteGate
from workers.outputs.audio import audio_params, packet_samples, silence_packet
from workers.outputs.base import ContainerWriter
from workers.outputs.hls import HlsWriter
from workers.outputs.params import AudioParams, VideoParams, WriterOptions
from workers.outputs.registry import file_kinds, writer_type
from workers.sink import FileObjects
from workers.timeline import Timeline, start_near

log = structlog.get_logger("recording")

VIDEO_OUT_RATE = 90000
MAX_CONSECUTIVE_MUX_ERRORS = 50


def storage_for(spec: RecordingSpec) -> StorageAdapter:
    """The task's destination says: node disk in place, or a bucket through the node's spool."""
    return Destination(spec.storage).writer_adapter(spec.task_id)


def _quit_reason(error: Exception) -> QuitReason:
    return QuitReason.OUT_OF_DISK_SPACE if isinstance(error, StorageFull) else QuitReason.FAILED_TO_OPEN_FILE


class State(enum.Enum):
    PENDING = "pending"  # waiting for the clock to settle or for a key frame
    ACTIVE = "active"
    PAUSED = "paused"  # PauseRecord: nothing is written
    RESUMING = "resuming"  # the file is open: waiting for a key frame to continue it
    CLOSED = "closed"


class Rebase(enum.Enum):
    CONTINUE = "continue"  # after a pause: the timeline goes on where the file ends, no gap
    KEEP_GAP = "keep_gap"  # FillBlank: the time the stream was away stays in the file, as silence




@dataclass
class _Output:
    """One recorded file."""

    writer: ContainerWriter
    objects: FileObjects
    kinds: frozenset[MediaKind]
    media_track_type: int
    errors: int = 0


class Recording:
    def __init__(self, spec: RecordingSpec, stream: StreamSpec, clock: StreamClock, uploader: ThreadPoolExecutor,
                 emit: Callable[[protocol.Event], None], wallclock: Callable[[], float] = time.time,
                 adapters: Callable[[DestinationSpec], StorageAdapter] | None = None,
                 fragment_duration_us: int = FRAGMENT_DURATION_US,
                 request_keyframe: Callable[[], object] = lambda: None):
        self.spec = spec
        self.stream = stream
        self._clock = clock
        self._uploader = uploader
        self._emit = emit
        self._wallclock = wallclock
        self._adapters = adapters
        self._fragment_duration_us = fragment_duration_us
        self._request_keyframe = request_keyframe  # a container needs one (an HLS segment is due)
        self._file_kinds = file_kinds(spec.output_format, spec.stream_type, {t.kind for t in stream.tracks})
        wanted = set().union(*self._file_kinds) if self._file_kinds else set()
        self.video_spec = stream.track(MediaKind.VIDEO) if MediaKind.VIDEO in wanted else None
        self.audio_spec = stream.track(MediaKind.AUDIO) if MediaKind.AUDIO in wanted else None
        self._audio = audio_params(self.audio_spec) if self.audio_spec is not None else None
        self.state = State.PENDING
        self._outputs: list[_Output] = []
        self._basis = Basis.ARRIVAL
        self._origin = 0.0
        self._timelines: dict[MediaKind, Timeline] = {}
        self._floors: dict[MediaKind, Timeline] = {}  # each track's timeline before the last rebase
        self._origin_arrival = 0.0
        self._anchor = (0.0, 0.0)  # the frame the timeline was last (re)based on: arrival, time in the file
        self._rebase = Rebase.CONTINUE
        self._opened = False
        self._video_params: VideoParams | None = None
        self._mute = MuteGate(self._audio, spec.mute_split_s) \
            if spec.skip_mute_audio and spec.output_format == "mp3" and self._audio is not None else None
        self.dropped_frames = 0
        self._warned: set[str] = set()
        self._log = log.bind(task_id=spec.task_id, stream_id=stream.stream_id, room_id=stream.room_id)

    def begin(self, frames: list[EncodedFrame], now: float) -> bool:
        """Open the file(s) at the first usable frame of `frames` and write them all.
        Returns False (and stays pending) when there is nothing to start on."""
        if not self._file_kinds:
            return False  # e.g. video only asked of an audio-only stream: nothing to record
        first = self._first_frame(frames)
        if first is None:
            return False
        self._basis = self._clock.basis()
        self._origin = self._clock.media_time(first.kind, first.rtp_timestamp, self._basis)
        self._origin_arrival = first.arrival
        self._anchor = (first.arrival, 0.0)
        begin_ms = int((self._wallclock() - (now - first.arrival)) * 1000)
        if not self._open(first, begin_ms):
            return True
        self._opened = True
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
        return next((f for f in frames if f.kind is MediaKind.AUDIO and self._sounds(f)), None)

    def _sounds(self, frame: EncodedFrame) -> bool:
        return self._mute is None or self._mute.is_sound(frame)

    def follow(self, previous: Recording) -> None:
        """This file follows `previous` of the same task: the mute gate goes on (its Opus
        decoder's state included: a fresh one would take the ringing after a sound for sound)."""
        if previous._mute is not None and self._mute is not None:
            self._mute = previous._mute

    def split_due(self, now: float) -> bool:
        """RecordMuteAudioSplitThreshold: the mute has lasted long enough for a new file."""
        return self.state is State.ACTIVE and self._mute is not None and self._mute.split_due(now)

    def _params(self, first: EncodedFrame) -> tuple[VideoParams | None, AudioParams | None]:
        video = None
        if self.video_spec is not None:
            codec = video_codec(self.video_spec.codec)
            video = VideoParams(codec.container_codec, *codec.keyframe_size(first.data))
        return video, self._audio

    def _open(self, first: EncodedFrame, begin_ms: int) -> bool:
        try:
            video, audio = self._params(first)
        except ValueError as error:  # e.g. an H.264 stream that never sends its SPS: nothing can play it
            self._fail(QuitReason.UNSUPPORTED_FORMAT, f"the stream's media cannot be recorded: {error}")
            return False
        try:
            self._video_params = video
            adapter = self._adapters(self.spec.storage) if self._adapters else storage_for(self.spec)
            options = WriterOptions(fragment_seconds=self.spec.fragment_seconds,
                                    realtime_playlist=self.spec.realtime_playlist,
                                    short_segment_paths=self.spec.short_segment_paths,
                                    fragment_duration_us=self._fragment_duration_us, mp4_audio=self.spec.mp4_audio)
            for index, kinds in enumerate(self._file_kinds):
                writer_class = writer_type(self.spec.output_format, index, kinds, video)
                media_track_type = (1 if MediaKind.AUDIO in kinds else 0) | (2 if MediaKind.VIDEO in kinds else 0)
                stem = naming.file_stem(task_id=self.spec.task_id, room_id=self.stream.room_id,
                                        user_id=self.stream.user_id, stream_id=self.stream.stream_id,
                                        media_track_type=media_track_type, begin_ms=begin_ms,
                                        folder=self.spec.output_folder)
                objects = FileObjects(adapter, self.spec.output_folder, self._uploader)
                writer = writer_class(objects, stem, video if MediaKind.VIDEO in kinds else None,
                                      audio if MediaKind.AUDIO in kinds else None, options)
                if isinstance(writer, HlsWriter):
                    writer.on_playlist = lambda key=writer.key: self._emit(
                        protocol.PlaylistWritten(self.spec.task_id, key))
                self._outputs.append(_Output(writer, objects, kinds, media_track_type))
        except (StorageError, av.FFmpegError, ValueError) as error:
            self._fail(_quit_reason(error),
                       f"cannot open the recording: {error}")
            return False
        for output in self._outputs:
            has_video = MediaKind.VIDEO in output.kinds and video is not None
            self._emit(protocol.FileOpened(
                task_id=self.spec.task_id, file_id=output.writer.key, file_url=output.writer.url,
                output_format=output.writer.output_format, media_track_type=output.media_track_type,
                begin_ms=begin_ms, width=video.width if has_video else 0, height=video.height if has_video else 0,
            ))
            self._log.info("file_opened", file_id=output.writer.key, basis=self._basis.value)
        return True

    # pause, resume, and a stream that comes back (FillBlank)
    def pause(self) -> None:
        if self.state in (State.PENDING, State.ACTIVE, State.RESUMING):
            self.state = State.PAUSED

    def resume(self) -> None:
        if self.state is State.PAUSED:
            self._rebase = Rebase.CONTINUE
            self.state = State.RESUMING if self._opened else State.PENDING

    def new_session(self, clock: StreamClock) -> None:
        """The stream was published again: new SSRCs, timestamps and clock."""
        self._clock = clock
        if self.state in (State.ACTIVE, State.RESUMING):
            self._rebase = Rebase.KEEP_GAP
            self.state = State.RESUMING

    def codec_changed(self, stream: StreamSpec) -> bool:
        """Whether the stream, published (or pulled) again as `stream`, sends video in another
        codec, or audio a file cannot continue (another codec, rate or channel count)."""
        video, audio = stream.track(MediaKind.VIDEO), stream.track(MediaKind.AUDIO)
        if self.video_spec is not None and video is not None and video.codec.upper() != self.video_spec.codec.upper():
            return True
        return self._audio is not None and audio is not None and audio_params(audio) != self._audio

    def resolution_changed(self, frame: EncodedFrame) -> bool:
        """A key frame of another picture size than the open file's: it needs a new file."""
        if not (frame.keyframe and frame.kind is MediaKind.VIDEO and self._video_params is not None
                and self.video_spec is not None):
            return False
        try:
            size = video_codec(self.video_spec.codec).keyframe_size(frame.data)
        except ValueError:
            return False
        return size != (self._video_params.width, self._video_params.height)

    def _starts_recording(self, frame: EncodedFrame) -> bool:
        if self.video_spec is not None:
            return frame.kind is MediaKind.VIDEO and frame.keyframe
        return frame.kind is MediaKind.AUDIO

    def _rebase_at(self, first: EncodedFrame) -> None:
        """Map `first` onto the file's timeline: where the file ends (CONTINUE), or
        as far after the file's start as it arrived (KEEP_GAP)."""
        end = max((t.end for t in self._timelines.values()), default=0.0)
        target = end if self._rebase is Rebase.CONTINUE else max(end, first.arrival - self._origin_arrival)
        self._floors.update(self._timelines)
        self._timelines = {}
        self._basis = self._clock.basis()
        self._origin = self._clock.media_time(first.kind, first.rtp_timestamp, self._basis) - target
        self._anchor = (first.arrival, target)

    def write(self, frame: EncodedFrame) -> None:
        if self.state is State.RESUMING and self._starts_recording(frame):
            self._rebase_at(frame)
            self.state = State.ACTIVE
        if self.state is not State.ACTIVE:
            return
        spec = self.video_spec if frame.kind is MediaKind.VIDEO else self.audio_spec
        if spec is None:
            return
        if frame.kind is MediaKind.AUDIO and self._mute is not None:
            if not self._mute.is_sound(frame):
                return
            if self._mute.after_mute and self._timelines:  # the file goes on where it ends, without the mute
                self._rebase = Rebase.CONTINUE
                self._rebase_at(frame)
        timeline = self._timelines.get(frame.kind)
        if timeline is None:
            timeline = self._start_timeline(frame, spec.clock_rate)
            if timeline is None:
                return
            pts = timeline.first_pts
        else:
            replaced = timeline.replaced
            placed = timeline.place(frame.rtp_timestamp, frame.arrival)
            if placed is None:
                self.dropped_frames += 1  # a timestamp going back: never write a non-monotonic track
                return
            if timeline.replaced != replaced:
                self._warn_once("timestamp_jump", track=frame.kind.value, rtp=frame.rtp_timestamp)
            pts = placed
        self._mux(frame, timeline, pts)
        timeline.last_arrival = frame.arrival

    def _start_timeline(self, frame: EncodedFrame, clock_rate: int) -> Timeline | None:
        media_time = self._clock.media_time(frame.kind, frame.rtp_timestamp, self._basis)
        out_rate = VIDEO_OUT_RATE if frame.kind is MediaKind.VIDEO else self._audio.sample_rate  # type: ignore[union-attr]
        first_pts = round((media_time - self._origin) * out_rate)
        others = [t for kind, t in self._timelines.items() if kind is not frame.kind]
        placed = start_near(first_pts, out_rate, others, frame.arrival, self._anchor)
        if placed != first_pts:
            self._warn_once("track_placed_by_arrival", track=frame.kind.value, clock_s=first_pts / out_rate)
            first_pts = placed
        if first_pts < 0:
            return None  # from before the recording's first key frame
        floor = self._floors.get(frame.kind)
        if floor is not None:
            if first_pts <= floor.last_pts:
                return None  # would go back in time in the file
            if frame.kind is MediaKind.AUDIO and self._rebase is Rebase.KEEP_GAP:
                self._fill_silence(floor, first_pts)
        timeline = Timeline(clock_rate, out_rate, frame.rtp_timestamp, first_pts, first_pts - 1,
                            last_arrival=frame.arrival)
        self._timelines[frame.kind] = timeline
        return timeline

    def _fill_silence(self, floor: Timeline, until: int) -> None:
        """FillBlank: the audio track covers the time the stream was away with silence."""
        assert self._audio is not None
        pts = floor.last_pts + max(floor.last_duration, 1)
        data, samples = silence_packet(self._audio)
        silence = EncodedFrame(MediaKind.AUDIO, data, 0, 0.0)
        while pts + samples <= until:
            self._mux(silence, floor, pts)
            pts += samples

    def _mux(self, frame: EncodedFrame, timeline: Timeline, pts: int) -> None:
        if frame.kind is MediaKind.VIDEO:
            duration = pts - timeline.last_pts if timeline.last_pts >= timeline.first_pts else 0
        else:
            duration = packet_samples(self._audio, frame.data)  # type: ignore[arg-type]
        for output in self._outputs:
            if frame.kind not in output.kinds:
                continue
            try:
                if frame.kind is MediaKind.VIDEO:
                    output.writer.write_video(frame.data, pts, frame.keyframe)
                else:
                    output.writer.write_audio(frame.data, pts, duration)
            except (av.FFmpegError, ValueError) as error:
                output.errors += 1
                self.dropped_frames += 1
                if output.errors >= MAX_CONSECUTIVE_MUX_ERRORS:
                    self._fail(QuitReason.UNKNOWN, f"the muxer keeps failing: {error}")
                    return
                continue
            output.errors = 0
            output.objects.pump()
        timeline.last_pts = pts
        if duration:
            timeline.last_duration = duration
        if frame.kind is MediaKind.VIDEO and any(o.writer.keyframe_due() for o in self._outputs):
            self._request_keyframe()

    def duration_ms(self, kinds: frozenset[MediaKind]) -> int:
        ends = [t.end for kind, t in self._timelines.items() if kind in kinds]
        return int(max(ends) * 1000) if ends else 0

    def progress(self) -> list[protocol.FileProgress]:
        if self.state is not State.ACTIVE:
            return []
        error = next((o.objects.error for o in self._outputs if o.objects.error is not None), None)
        if error is not None:
            self._fail(_quit_reason(error),
                       f"storage failed: {error}")
            return []
        return [protocol.FileProgress(self.spec.task_id, o.writer.key, o.objects.durable_bytes,
                                      self.duration_ms(o.kinds)) for o in self._outputs]

    def _warn_once(self, event: str, **details: object) -> None:
        """A timestamp the file's timeline overruled: said once per file, not per frame."""
        if event not in self._warned:
            self._warned.add(event)
            self._log.warning(event, **details)

    def _fail(self, quit_reason: QuitReason, message: str) -> None:
        self._log.error("recording_failed", quit_reason=quit_reason, message=message)
        self._emit(protocol.RecordingFailed(self.spec.task_id, quit_reason, message))
        self._close_writers()

    def _close_writers(self) -> None:
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        for output in self._outputs:
            try:
                output.writer.close()
            except (av.FFmpegError, ValueError, StorageError) as error:
                self._log.warning("trailer_failed", file_id=output.writer.key, error=str(error))

    async def close(self) -> None:
        """Finish the file(s) and wait until storage holds all of them."""
        self._close_writers()
        for output in self._outputs:
            results = await asyncio.gather(*(asyncio.wrap_future(f) for f in output.objects.close()))
            error = output.objects.error
            ok = error is None and all(r is not None for r in results)
            main = output.objects.info(output.writer.name)
            self._emit(protocol.FileClosed(
                task_id=self.spec.task_id, file_id=output.writer.key, size=output.objects.durable_bytes,
                duration_ms=self.duration_ms(output.kinds), ok=ok, sha256=main.sha256 if main else "",
                error=str(error) if error else "",
            ))
            self._log.info("file_closed", file_id=output.writer.key, size=output.objects.durable_bytes,
                           duration_ms=self.duration_ms(output.kinds), ok=ok)
