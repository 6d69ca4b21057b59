"""Snapshots: JPEG pictures of a stream, for jpg tasks (every SnapshotInterval) and
for TakeSnapshot (one, now). No container is written.

The picture shown for a time is the frame at or before it. A snapshot recording
keeps the video since the last key frame (at most a GOP cache's worth) and, at each
snapshot time, decodes from that key frame to the frame shown, off the media loop
(`workers.outputs.jpeg`). So that this stays short it asks the publisher for a key
frame a little before each snapshot time; with no key frame kept, the picture is
taken from the next one. Times follow the video's RTP timestamps from the first
picture, whose wall-clock time is that of its arrival (as a file's begin time is).
Each picture is one object, named like a file (`..._V_<UTC>.jpg`, its time), written
through the task's writer adapter and reported up the pipe once stored.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import structlog

from contract import protocol
from contract.codes import MediaKind, QuitReason
from contract.storage import DestinationSpec
from contract.tuning import GOP_CACHE_MAX_S
from contract.worker import RecordingSpec, StreamSpec
from storage_adapters.base import ObjectInfo, StorageAdapter, StorageError, StorageFull
from workers import naming
from workers.clock import StreamClock
from workers.codecs import video_codec
from workers.frames import EncodedFrame
from workers.outputs.jpeg import Picture, PictureMaker
from workers.recording import State, storage_for

log = structlog.get_logger("snapshots")

KEYFRAME_LEAD_S = 1.0  # ask for a key frame this long before a snapshot is due
VIDEO_TRACK_TYPE = 2
RECENT_NAMES = 8  # a picture of the same frame is not stored twice


def _store(adapter: StorageAdapter, key: str, data: bytes) -> ObjectInfo:
    """On the uploader thread: one whole object."""
    sink = adapter.open_object(key)
    try:
        sink.write(data)
    except StorageError:
        sink.abort()
        raise
    return sink.close()


class Pictures:
    """One task's pictures of one stream: made on a thread of their own, stored in
    order on the uploader thread, each reported up the pipe (SnapshotTaken)."""

    def __init__(self, spec: RecordingSpec, stream: StreamSpec, codec: str, uploader: ThreadPoolExecutor,
                 emit: Callable[[protocol.Event], None], adapter: StorageAdapter):
        self._spec = spec
        self._stream = stream
        self._uploader = uploader
        self._emit = emit
        self._adapter = adapter
        self._maker = PictureMaker(video_codec(codec).container_codec)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot")
        self._pending: set[asyncio.Task] = set()
        self._recent: deque[str] = deque(maxlen=RECENT_NAMES)

    def take(self, frames: list[EncodedFrame], taken_ms: int) -> None:
        """`frames`: from a key frame to the frame to show."""
        name = naming.file_stem(task_id=self._spec.task_id, room_id=self._stream.room_id,
                                user_id=self._stream.user_id, stream_id=self._stream.stream_id,
                                media_track_type=VIDEO_TRACK_TYPE, begin_ms=taken_ms,
                                folder=self._spec.output_folder) + ".jpg"
        if name in self._recent:
            return
        self._recent.append(name)
        loop = asyncio.get_running_loop()
        made = loop.run_in_executor(self._thread, self._maker.picture, [f.data for f in frames])
        task = loop.create_task(self._stored(made, self._spec.output_folder + name, taken_ms))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _stored(self, made: asyncio.Future[Picture], key: str, taken_ms: int) -> None:
        try:
            picture = await made
        except ValueError as error:
            log.warning("snapshot_failed", task_id=self._spec.task_id, error=str(error))
            return
        try:
            info = await asyncio.wrap_future(self._uploader.submit(_store, self._adapter, key, picture.jpeg))
            ok, size, error = True, info.size, ""
        except StorageError as failure:
            ok, size, error = False, 0, str(failure)
            if isinstance(failure, StorageFull):
                self._emit(protocol.RecordingFailed(self._spec.task_id, QuitReason.OUT_OF_DISK_SPACE, error))
        self._emit(protocol.SnapshotTaken(self._spec.task_id, key, self._adapter.object_url(key), taken_ms,
                                          picture.width, picture.height, size, ok, error))
        log.info("snapshot_taken", task_id=self._spec.task_id, file_id=key, size=size, ok=ok)

    async def close(self) -> None:
        """Once every picture asked for is stored and reported: the decoder is freed."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        self._thread.shutdown(wait=True)
        self._maker.close()


class SnapshotRecording:
    """A jpg task's recording of one stream (the part of `workers.recording.Recording`'s
    interface that `workers.recordings.StreamRecordings` uses)."""

    def __init__(self, spec: RecordingSpec, stream: StreamSpec, clock: StreamClock, uploader: ThreadPoolExecutor,
                 emit: Callable[[protocol.Event], None], wallclock: Callable[[], float] = time.time,
                 adapters: Callable[[DestinationSpec], StorageAdapter] | None = None,
                 request_keyframe: Callable[[], object] = lambda: None, gop_max_s: float = GOP_CACHE_MAX_S):
        self.spec = spec
        self.stream = stream
        self.video_spec = stream.track(MediaKind.VIDEO) if spec.stream_type != 1 else None
        self.audio_spec = None
        self.state = State.PENDING
        self._uploader = uploader
        self._emit = emit
        self._wallclock = wallclock
        self._adapters = adapters
        self._request_keyframe = request_keyframe
        rate = self.video_spec.clock_rate if self.video_spec is not None else 90000
        self._rate = rate
        self._interval = spec.snapshot_interval_s * rate
        self._lead = round(KEYFRAME_LEAD_S * rate)
        self._gop_max = round(gop_max_s * rate)
        self._gop: list[EncodedFrame] = []  # video from the last key frame on
        self._origin_rtp = self._origin_ms = 0
        self._next = 0  # RTP time of the next snapshot
        self._asked_for = -1  # the snapshot a key frame was asked for
        self._owed = False  # a snapshot waits for a key frame
        self._stale = False  # the stream came back while paused: start over on resume
        self._pictures: Pictures | None = None
        self.dropped_frames = 0

    # the interface StreamRecordings uses
    def begin(self, frames: list[EncodedFrame], now: float) -> bool:
        first = next((f for f in frames if f.kind is MediaKind.VIDEO and f.keyframe), None)
        if self.video_spec is None or first is None:
            return False
        if self._pictures is None:
            adapter = self._adapters(self.spec.storage) if self._adapters else storage_for(self.spec)
            self._pictures = Pictures(self.spec, self.stream, self.video_spec.codec, self._uploader, self._emit,
                                      adapter)
        self._origin_rtp = self._next = first.rtp_timestamp
        self._origin_ms = int((self._wallclock() - (now - first.arrival)) * 1000)
        self._gop = []
        self.state = State.ACTIVE
        for frame in frames[frames.index(first):]:
            self.write(frame)
        return True

    def write(self, frame: EncodedFrame) -> None:
        if self.state is not State.ACTIVE or frame.kind is not MediaKind.VIDEO:
            return
        if self._gop and frame.rtp_timestamp <= self._gop[-1].rtp_timestamp:
            self.dropped_frames += 1  # a timestamp going back
            return
        if frame.rtp_timestamp >= self._next:
            if frame.rtp_timestamp == self._next:
                self._keep(frame)
                self._snap()
            else:
                self._snap()  # the frame before this one is the one shown at that time
                self._keep(frame)
            passed = (frame.rtp_timestamp - self._origin_rtp) // self._interval + 1
            self._next = self._origin_rtp + passed * self._interval
        else:
            self._keep(frame)
        if frame.rtp_timestamp + self._lead >= self._next and self._asked_for != self._next:
            self._asked_for = self._next
            self._request_keyframe()

    def take_snapshot(self) -> bool:
        """TakeSnapshot: the latest frame now, or the next key frame when none is kept."""
        if self.state is State.ACTIVE:
            self._snap()
        elif self.state is State.PENDING:
            self._owed = True  # the first picture comes with the first key frame anyway
        return self.state in (State.ACTIVE, State.PENDING)

    def pause(self) -> None:
        if self.state in (State.PENDING, State.ACTIVE):
            self.state = State.PAUSED
            self._gop = []  # frames will be missing: decoding starts again at a key frame

    def resume(self) -> None:
        if self.state is State.PAUSED:
            self.state = State.PENDING if self._pictures is None or self._stale else State.ACTIVE
            self._stale = False

    def new_session(self, clock: StreamClock) -> None:
        """The stream was published again: new timestamps, so the times start over."""
        if self.state is State.PAUSED:
            self._stale = True
        elif self.state is State.ACTIVE:
            self.state = State.PENDING

    def codec_changed(self, stream: StreamSpec) -> bool:
        video = stream.track(MediaKind.VIDEO)
        return (self.video_spec is not None and video is not None
                and video.codec.upper() != self.video_spec.codec.upper())

    def resolution_changed(self, frame: EncodedFrame) -> bool:
        return False  # pictures take the size of their frame

    def progress(self) -> list[protocol.FileProgress]:
        return []

    async def close(self) -> None:
        self.state = State.CLOSED
        if self._pictures is not None:
            await self._pictures.close()

    # pictures
    def _keep(self, frame: EncodedFrame) -> None:
        if frame.keyframe:
            self._gop = [frame]
            if self._owed:
                self._snap()
        elif self._gop:
            self._gop.append(frame)
            if frame.rtp_timestamp - self._gop[0].rtp_timestamp > self._gop_max:
                self._gop = []  # a GOP longer than the cache: the next picture waits for a key frame

    def _snap(self) -> None:
        if not self._gop or self._pictures is None:
            self._owed = True
            self._request_keyframe()
            return
        self._owed = False
        shown = self._gop[-1]
        self._pictures.take(list(self._gop),
                            self._origin_ms + round((shown.rtp_timestamp - self._origin_rtp) * 1000 / self._rate))


class OneShot:
    """TakeSnapshot for a task that records files: a picture of the latest frame, from
    the stream's GOP cache, or of the next key frame when the cache holds none. Its
    decoder lives until the picture is stored."""

    def __init__(self, spec: RecordingSpec, stream: StreamSpec, uploader: ThreadPoolExecutor,
                 emit: Callable[[protocol.Event], None], wallclock: Callable[[], float] = time.time,
                 adapters: Callable[[DestinationSpec], StorageAdapter] | None = None):
        video = stream.track(MediaKind.VIDEO)
        assert video is not None
        adapter = adapters(spec.storage) if adapters else storage_for(spec)
        self.pictures = Pictures(spec, stream, video.codec, uploader, emit, adapter)
        self._wallclock = wallclock
        self.taken = False

    def take(self, cached: list[EncodedFrame], now: float) -> bool:
        """From the latest key frame of `cached` to its last frame; False when it has no key frame."""
        video = [f for f in cached if f.kind is MediaKind.VIDEO]
        start = next((i for i in range(len(video) - 1, -1, -1) if video[i].keyframe), None)
        if start is None:
            return False
        self._picture(video[start:], now)
        return True

    def on_frame(self, frame: EncodedFrame, now: float) -> None:
        if not self.taken and frame.kind is MediaKind.VIDEO and frame.keyframe:
            self._picture([frame], now)

    def _picture(self, frames: list[EncodedFrame], now: float) -> None:
        self.taken = True
        self.pictures.take(frames, int((self._wallclock() - (now - frames[-1].arrival)) * 1000))
