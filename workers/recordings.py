"""A stream's recordings (one per task) and the policy of when their files start and roll over.

A file starts once the stream's clock has settled (RTCP Sender Reports, or the wait
for them is over) on the last key frame the GOP cache kept, so a task started
mid-GOP does not wait for the next one; with none kept, the publisher is asked for
one. A file rolls over to a new one when the picture size changes (a browser under
load) or the stream comes back with another codec (FillBlank).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import structlog

from contract import protocol
from contract.codes import MediaKind
from contract.tuning import MediaTuning
from contract.worker import RecordingSpec, StreamSpec
from workers.clock import StreamClock, Verdict
from workers.frames import EncodedFrame
from workers.gop import GopCache
from workers.recording import Recording, State
from workers.snapshots import OneShot, Pictures, SnapshotRecording

log = structlog.get_logger("recordings")


class StreamRecordings:
    def __init__(self, stream: StreamSpec, tuning: MediaTuning, emit: Callable[[protocol.Event], None],
                 request_keyframe: Callable[[], bool]):
        self._tuning = tuning
        self._emit = emit
        self._request_keyframe = request_keyframe
        self._uploader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="uploader")
        self._closing: set[asyncio.Task] = set()
        self._keyframe_wanted = False
        self.by_task: dict[str, Recording | SnapshotRecording] = {}
        self._one_shots: dict[str, OneShot] = {}  # TakeSnapshot of a task that records files, until taken
        self.new_session(stream)

    def new_session(self, stream: StreamSpec) -> None:
        """A (re)published stream: fresh clock and GOP; kept recordings continue
        (a new file where the codec changed)."""
        self.stream = stream
        self.clock = StreamClock({t.kind: t.clock_rate for t in stream.tracks}, self._tuning.sync_wait_for_sr_s,
                                 self._tuning.sr_max_skew_s, self._tuning.sync_wait_for_late_sr_s)
        self.gop = GopCache(has_video=stream.track(MediaKind.VIDEO) is not None, max_s=self._tuning.gop_cache_max_s)
        for task_id, recording in list(self.by_task.items()):
            if recording.codec_changed(stream):
                self._next_file(task_id, recording, "codec_changed")
            else:
                recording.new_session(self.clock)

    def _new_recording(self, spec: RecordingSpec) -> Recording | SnapshotRecording:
        if spec.output_format == "jpg":
            return SnapshotRecording(spec, self.stream, self.clock, self._uploader, self._emit,
                                     request_keyframe=self._request_keyframe, gop_max_s=self._tuning.gop_cache_max_s)
        return Recording(spec, self.stream, self.clock, self._uploader, self._emit,
                         fragment_duration_us=self._tuning.fragment_duration_us,
                         request_keyframe=self._request_keyframe)

    # what the supervisor asks
    def start(self, spec: RecordingSpec, now: float) -> None:
        if spec.task_id not in self.by_task:
            recording = self.by_task[spec.task_id] = self._new_recording(spec)
            self._try_begin(recording, now)

    def stop(self, task_id: str) -> Awaitable[None] | None:
        """Close the task's file(s); the returned task ends when storage holds them."""
        one_shot = self._one_shots.pop(task_id, None)
        if one_shot is not None:
            self._close(one_shot.pictures)
        recording = self.by_task.pop(task_id, None)
        return self._close(recording) if recording is not None else None

    def take_snapshot(self, task_id: str, now: float) -> bool:
        """TakeSnapshot: a picture now (or of the next key frame) if the task records video here."""
        recording = self.by_task.get(task_id)
        if recording is None or recording.video_spec is None or recording.state is State.CLOSED:
            return False
        if isinstance(recording, SnapshotRecording):
            return recording.take_snapshot()
        if task_id not in self._one_shots:
            one_shot = OneShot(recording.spec, self.stream, self._uploader, self._emit)
            if one_shot.take(self.gop.frames(), now):
                self._close(one_shot.pictures)
                return True
            self._one_shots[task_id] = one_shot
        self._request_keyframe()
        return True

    def pause(self, task_id: str) -> bool:
        recording = self.by_task.get(task_id)
        if recording is not None:
            recording.pause()
        return recording is not None

    def resume(self, task_id: str) -> bool:
        recording = self.by_task.get(task_id)
        if recording is not None:
            recording.resume()
            self._request_keyframe()  # the file continues on the next key frame
        return recording is not None

    async def close_all(self) -> None:
        for closable in [*self.by_task.values(), *(o.pictures for o in self._one_shots.values())]:
            self._close(closable)
        self.by_task.clear()
        self._one_shots.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        self._uploader.shutdown(wait=True)

    def _close(self, closable: Recording | SnapshotRecording | Pictures) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(closable.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        return task

    # media
    def on_sender_report(self, kind: MediaKind, ntp: int, rtp: int) -> None:
        self._refused(kind, self.clock.on_sender_report(kind, ntp, rtp, time.monotonic()))

    def _refused(self, kind: MediaKind, verdict: Verdict | None) -> None:
        if verdict is not None and self.clock.refused[verdict] == 1:  # once per kind of nonsense and session
            log.warning("sender_report_refused", track=kind.value, reason=verdict.value)

    def on_frame(self, frame: EncodedFrame, now: float) -> None:
        self._refused(frame.kind, self.clock.on_frame(frame.kind, frame.rtp_timestamp, frame.arrival))
        self.gop.add(frame, hold=any(r.state is State.PENDING for r in self.by_task.values()))
        for task_id, one_shot in list(self._one_shots.items()):
            one_shot.on_frame(frame, now)
            if one_shot.taken:
                self._close(self._one_shots.pop(task_id).pictures)
        for task_id, recording in list(self.by_task.items()):
            if recording.state is State.ACTIVE and recording.resolution_changed(frame):
                recording = self._next_file(task_id, recording, "resolution_changed")
            if recording.state in (State.ACTIVE, State.RESUMING):
                recording.write(frame)
            elif recording.state is State.PENDING:
                self._try_begin(recording, now, frame)
        self._split_muted(now)

    def tick(self, now: float) -> None:
        for recording in self.by_task.values():
            if recording.state is State.PENDING:
                self._try_begin(recording, now)
        self._split_muted(now)

    def _split_muted(self, now: float) -> None:
        """mp3 with RecordMuteAudioSplitThreshold: a long enough mute ends the file; the next sound begins one."""
        for task_id, recording in list(self.by_task.items()):
            if isinstance(recording, Recording) and recording.split_due(now):
                self._next_file(task_id, recording, "mute_split")

    def progress(self) -> list[protocol.FileProgress]:
        return [progress for recording in self.by_task.values() for progress in recording.progress()]

    def _next_file(self, task_id: str, old: Recording, reason: str) -> Recording:
        log.info(reason, task_id=task_id)
        self._close(old)
        new = self._new_recording(old.spec)
        if isinstance(old, Recording) and isinstance(new, Recording):
            new.follow(old)
        if old.state is State.PAUSED:
            new.pause()
        self.by_task[task_id] = new
        return new

    def _try_begin(self, recording: Recording, now: float, frame: EncodedFrame | None = None) -> None:
        if not self.clock.settled(now):
            return
        if recording.video_spec is None:  # audio only: no GOP to wait for, start on this packet
            if frame is not None:
                recording.begin([frame], now)
            return
        if not self.gop.has_keyframe:
            if not self._keyframe_wanted:
                self._keyframe_wanted = self._request_keyframe()  # False: no input to ask yet
            return
        if recording.begin(self.gop.frames(), now):
            self._keyframe_wanted = False
