"""Snapshots of a stream: a JPEG every interval of the frame at or before each time,
decoded from the last key frame only, stored one object each, reported up the pipe.

The test clip flashes white on every whole second and moves a grey square one step
per frame elsewhere, so a picture tells which frame it shows."""

import asyncio
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import av
import numpy as np

from contract import protocol
from contract.codes import MediaKind
from contract.worker import TrackSpec
from storage_adapters.memory import MemoryAdapter
from testkit.media import LUMA_SQUARE, SQUARE_SIZE, make_test_media
from tests.workers.test_recording import SPEC, STREAM, frames
from workers.clock import StreamClock
from workers.outputs import jpeg
from workers.recording import State
from workers.snapshots import OneShot, SnapshotRecording

WALL = 1_700_000_000.0  # the wall clock at arrival 10.0 (monotonic), the clip's time 0
JPG = replace(SPEC, output_format="jpg", stream_type=2, snapshot_interval_s=5)


def decode_jpeg(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        assert container.format.name == "jpeg_pipe"
        return next(container.decode(video=0)).to_ndarray(format="gray")


def shown_frame(luma: np.ndarray, media) -> int | str:
    """'white', or the index (mod the square's cycle) of the frame whose square is where it is."""
    if luma.mean() > 200:
        return "white"
    ys, xs = np.nonzero(np.abs(luma.astype(int) - LUMA_SQUARE) < 20)
    y, x = int(np.median(ys)) - SQUARE_SIZE // 2, int(np.median(xs)) - SQUARE_SIZE // 2
    return next(i for i in range(len(media.video)) if abs((i * 4) % (media.width - SQUARE_SIZE) - x) <= 2
                and abs((i * 3) % (media.height - SQUARE_SIZE) - y) <= 2)


def snapshot(stream_frames, spec=JPG, take_at=(), keyframe_requests=None, stream=STREAM):
    """Feed a SnapshotRecording in an event loop: (pictures by time, SnapshotTaken events, objects)."""
    adapter, events = MemoryAdapter(), []

    async def run():
        clock = StreamClock({t.kind: t.clock_rate for t in STREAM.tracks}, sync_wait_s=0)
        with ThreadPoolExecutor(1) as uploader:
            recording = SnapshotRecording(spec, stream, clock, uploader, events.append, wallclock=lambda: WALL,
                                          adapters=lambda target: adapter,
                                          request_keyframe=lambda: keyframe_requests is not None and
                                          keyframe_requests.append(recording_time[-1]))
            for frame in stream_frames:
                recording_time.append(round(frame.arrival - 10, 3))
                if recording.state is State.PENDING:
                    recording.begin([frame], 10.0)  # at the first frame's arrival, when the wall clock says WALL
                else:
                    recording.write(frame)
                if recording_time[-1] in take_at and frame.kind is MediaKind.VIDEO:
                    assert recording.take_snapshot()
            await recording.close()

    recording_time = [0.0]
    asyncio.run(run())
    taken = [e for e in events if isinstance(e, protocol.SnapshotTaken)]
    return taken, adapter.objects


def test_a_picture_every_interval_of_the_frame_at_its_time():
    media = make_test_media(12.0, keyint=90, flash_period_s=1.0, flash_offset_s=0.0)  # key frames every 3 s
    taken, objects = snapshot(frames(media))
    assert [e.taken_ms - WALL * 1000 for e in taken] == [0, 5000, 10000]
    for event in taken:
        assert event.ok and event.file_id in objects and event.size == len(objects[event.file_id])
        assert (event.width, event.height) == (320, 240)
        assert "_V_" in event.file_id and event.file_id.endswith(".jpg") and event.file_id.startswith("rec/")
        # a whole second: the flash, decoded from the key frame up to 2 s before it (5 s, 10 s)
        assert shown_frame(decode_jpeg(objects[event.file_id]), media) == "white"


def test_the_frame_before_a_time_that_has_none():
    media = make_test_media(7.0, keyint=90, flash_period_s=1.0, flash_offset_s=0.0)
    missing = [f for f in frames(media) if not (f.kind is MediaKind.VIDEO and abs(f.arrival - 15.0) < 1e-6)]
    taken, objects = snapshot(missing)
    assert [e.taken_ms - WALL * 1000 for e in taken] == [0, 4967]  # frame 149, 4.9667 s
    assert shown_frame(decode_jpeg(objects[taken[1].file_id]), media) == 149


def test_a_key_frame_is_asked_for_shortly_before_each_picture():
    media = make_test_media(12.0, keyint=360)
    asked = []
    snapshot(frames(media), keyframe_requests=asked)
    assert asked == [4.0, 9.0]


def test_take_snapshot_shows_the_latest_frame_now():
    media = make_test_media(4.0, keyint=90, flash_period_s=1.0, flash_offset_s=0.0)
    taken, objects = snapshot(frames(media), take_at=(2.5,))
    assert [e.taken_ms - WALL * 1000 for e in taken] == [0, 2500]
    assert shown_frame(decode_jpeg(objects[taken[1].file_id]), media) == 75


def test_one_shot_from_the_cache_and_from_the_next_key_frame():
    media = make_test_media(2.0, keyint=30, flash_period_s=1.0, flash_offset_s=0.0)
    video = [f for f in frames(media) if f.kind is MediaKind.VIDEO]
    adapter, events = MemoryAdapter(), []

    async def run():
        with ThreadPoolExecutor(1) as uploader:
            cached = OneShot(JPG, STREAM, uploader, events.append, wallclock=lambda: WALL + 0.5,
                             adapters=lambda target: adapter)
            assert cached.take(video[:46], now=10.5)  # key frames at 0 and 1 s: from 1 s to frame 45
            await cached.pictures.close()
            waiting = OneShot(JPG, STREAM, uploader, events.append, wallclock=lambda: WALL + 0.5,
                              adapters=lambda target: adapter)
            assert not waiting.take(video[5:20], now=10.5)  # no key frame kept
            for frame in video[20:]:
                waiting.on_frame(frame, now=10.5)
            await waiting.pictures.close()

    asyncio.run(run())
    pictures = [shown_frame(decode_jpeg(adapter.objects[e.file_id]), media) for e in events]
    assert pictures == [45, "white"]  # the frame at 1.5 s; the next key frame, at 1 s (a flash)
    assert [e.taken_ms - WALL * 1000 for e in events] == [1500, 1000]


def test_the_decoder_is_reused_picture_after_picture():
    media = make_test_media(2.0, keyint=30)
    maker = jpeg.PictureMaker("h264")
    first = maker.picture([au.data for au in media.video[:10]])
    second = maker.picture([au.data for au in media.video[30:31]])
    maker.close()
    assert shown_frame(decode_jpeg(first.jpeg), media) == 9
    assert shown_frame(decode_jpeg(second.jpeg), media) == 30


def test_pictures_of_vp8():
    media = make_test_media(6.0, keyint=90, flash_period_s=1.0, flash_offset_s=0.0, video_codec="vp8")
    vp8 = replace(STREAM, tracks=(TrackSpec(MediaKind.VIDEO, "VP8", 97, 90000), STREAM.tracks[1]))
    taken, objects = snapshot(frames(media), stream=vp8)
    assert [e.taken_ms - WALL * 1000 for e in taken] == [0, 5000]
    assert [shown_frame(decode_jpeg(objects[e.file_id]), media) for e in taken] == ["white", "white"]
