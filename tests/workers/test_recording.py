"""A Recording fed with real encoded frames, writing through the in-memory twin."""

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from contract import protocol
from contract.codes import MediaKind, QuitReason
from contract.storage import DestinationSpec, StorageTarget
from contract.worker import RecordingSpec, StreamSpec, TrackSpec
from storage_adapters.memory import MemoryAdapter
from storage_adapters.spool import SpoolEntry
from testkit import bitstream, probe
from testkit.media import make_test_media
from workers.clock import StreamClock
from workers.frames import EncodedFrame
from workers.recording import Recording, State, storage_for

V, A = MediaKind.VIDEO, MediaKind.AUDIO
STREAM = StreamSpec("room", "stream", "user", (TrackSpec(V, "H264", 96, 90000), TrackSpec(A, "opus", 111, 48000, 2)))
SPEC = RecordingSpec("T" * 16, 3, "mp4", "rec/", 1, 15, DestinationSpec(StorageTarget(0, "bucket"), remote=False))


def frames(media, audio_delay=0.0, v_base=1000, a_base=5000):
    out = [EncodedFrame(V, au.data, v_base + round(au.time_s * 90000), 10 + au.time_s, au.keyframe)
           for au in media.video]
    out += [EncodedFrame(A, p.data, a_base + round(p.time_s * 48000), 10 + p.time_s + audio_delay)
            for p in media.audio]
    return sorted(out, key=lambda f: f.arrival)


def run_recording(frames_in, uploader, stream=STREAM, spec=SPEC, on_frame=None, adapter=None,
                  request_keyframe=lambda: None):
    """Feed `frames_in` to one Recording and close it: (the objects written, events, the recording).
    Written through the in-memory twin unless another `adapter` is given."""
    adapter = adapter or MemoryAdapter()
    events = []
    clock = StreamClock({t.kind: t.clock_rate for t in stream.tracks}, sync_wait_s=0)
    recording = Recording(spec, stream, clock, uploader, events.append, wallclock=lambda: 1_700_000_000.0,
                          adapters=lambda target: adapter, request_keyframe=request_keyframe)
    for frame in frames_in:
        if on_frame is not None:
            on_frame(recording, frame)
        clock.tracks[frame.kind].on_frame(frame.rtp_timestamp, frame.arrival)
        if recording.state is State.PENDING:
            recording.begin([frame], frame.arrival)
        else:
            recording.write(frame)
    asyncio.run(recording.close())
    return adapter.objects if isinstance(adapter, MemoryAdapter) else {}, events, recording


def record(frames_in, uploader, tmp_path, stream=STREAM, spec=SPEC):
    objects, events, recording = run_recording(frames_in, uploader, stream, spec)
    [key] = objects
    path = tmp_path / "out.mp4"
    path.write_bytes(objects[key])
    return key, path, events, recording


def test_file_holds_every_frame_from_the_first_key_frame(uploader, tmp_path):
    media = make_test_media(2.0)
    key, path, events, _ = record(frames(media), uploader, tmp_path)
    assert key.startswith("rec/" + "T" * 16 + "_room_user_stream_VA_20231114221320000")
    opened, closed = events[0], events[-1]
    assert isinstance(opened, protocol.FileOpened) and (opened.width, opened.height) == (320, 240)
    assert isinstance(closed, protocol.FileClosed) and closed.ok and closed.size == path.stat().st_size
    report = probe.decode_all(path)
    assert report.errors == () and report.video_frames == 60
    assert bitstream.h264_slice_nals_from_file(path) == bitstream.h264_slice_nals_from_aus(au.data for au in media.video)
    assert abs(closed.duration_ms - 2000) <= 20
    # the first Opus packet was captured 6.5 ms before the first key frame: left out
    assert bitstream.opus_packets_from_file(path) == [p.data for p in media.audio[1:]]


def test_video_that_cannot_be_recorded_fails_with_quit_reason_1010(uploader):
    """An H.264 stream that never sends its SPS (none in the SDP either) cannot make a file
    anything plays: the recording fails as unsupported media, not as a file it could not open."""
    media = make_test_media(1.0)
    stripped = [replace(f, data=bitstream.without_parameter_sets(f.data)) if f.kind is V else f
                for f in frames(media)]
    objects, events, recording = run_recording(stripped, uploader)
    [failed] = [e for e in events if isinstance(e, protocol.RecordingFailed)]
    assert failed.quit_reason == QuitReason.UNSUPPORTED_FORMAT == 1010 and "SPS" in failed.message
    assert objects == {} and recording.state is State.CLOSED
    assert not any(isinstance(e, protocol.FileOpened) for e in events)


def test_recording_waits_for_a_key_frame(uploader, tmp_path):
    media = make_test_media(2.0)
    late = [f for f in frames(media) if f.arrival >= 10.2]  # joins after the key frame at 0
    _, path, _, _ = record(late, uploader, tmp_path)
    report = probe.decode_all(path)
    assert report.errors == () and report.video_frames == 30  # from the key frame at 1.0 s


def test_timestamps_going_back_are_dropped_not_written(uploader, tmp_path):
    media = make_test_media(1.0)
    stream_frames = frames(media)
    replay = [f for f in stream_frames if f.kind is V][5]
    bad = EncodedFrame(V, replay.data, replay.rtp_timestamp, 11.0, False)
    _, path, _, recording = record(stream_frames + [bad], uploader, tmp_path)
    assert recording.dropped_frames == 1
    assert probe.decode_all(path).errors == ()


def test_video_only_stream_type_from_an_av_stream(uploader, tmp_path):
    media = make_test_media(1.0)
    video_only = StreamSpec("room", "stream", "user", (STREAM.tracks[0],))
    key, path, _, _ = record([f for f in frames(media) if f.kind is V], uploader, tmp_path, stream=video_only)
    assert "_V_" in key
    report = probe.decode_all(path)
    assert report.audio_frames == 0 and report.video_frames == 30


# -- VP8: into WebM whatever container was asked for -------------------------------------

VP8_STREAM = StreamSpec("room", "stream", "user", (TrackSpec(V, "VP8", 97, 90000), STREAM.tracks[1]))


def _files(objects, tmp_path) -> dict[str, Path]:
    """The objects as files, by extension."""
    paths = {}
    for key, data in objects.items():
        path = tmp_path / key.rsplit("/", 1)[-1]
        path.write_bytes(data)
        paths[key.rsplit(".", 1)[-1]] = path
    return paths


@pytest.mark.parametrize("output_format", ["mp4", "flv", "hls"])
def test_vp8_is_recorded_into_webm_whatever_was_asked(uploader, tmp_path, output_format):
    media = make_test_media(2.0, video_codec="vp8")
    spec = replace(SPEC, output_format=output_format)
    objects, events, _ = run_recording(frames(media), uploader, VP8_STREAM, spec)
    [opened] = [e for e in events if isinstance(e, protocol.FileOpened)]
    assert opened.output_format == "webm" and opened.file_id.endswith(".webm")
    assert (opened.width, opened.height, opened.media_track_type) == (320, 240, 3)
    [closed] = [e for e in events if isinstance(e, protocol.FileClosed)]
    assert closed.ok and abs(closed.duration_ms - 2000) <= 20
    [path] = _files(objects, tmp_path).values()
    report = probe.decode_all(path)
    assert report.errors == () and (report.video_codec, report.audio_codec) == ("vp8", "opus")
    assert bitstream.vp8_frames_from_file(path) == [au.data for au in media.video]
    assert bitstream.opus_packets_from_file(path) == [p.data for p in media.audio[1:]]


@pytest.mark.parametrize("output_format, audio_extension", [("mp4", "aac"), ("hls", "ts")])
def test_vp8_stream_type_4_keeps_its_separate_audio_file(uploader, tmp_path, output_format, audio_extension):
    media = make_test_media(2.0, video_codec="vp8")
    spec = replace(SPEC, stream_type=4, output_format=output_format)
    objects, events, _ = run_recording(frames(media), uploader, VP8_STREAM, spec)
    formats = {e.media_track_type: e.output_format for e in events if isinstance(e, protocol.FileOpened)}
    assert formats == {2: "webm", 1: "aac" if output_format == "mp4" else "hls"}
    paths = _files(objects, tmp_path)
    video = probe.decode_all(paths["webm"])
    assert video.errors == () and video.video_frames == 60 and video.audio_frames == 0
    assert probe.decode_all(paths[audio_extension]).audio_frames > 0


def test_vp8_audio_only_stream_type_is_unaffected(uploader, tmp_path):
    media = make_test_media(1.0, video_codec="vp8")
    objects, events, _ = run_recording(frames(media), uploader, VP8_STREAM, replace(SPEC, stream_type=1))
    [key] = objects
    assert key.endswith(".mp4") and events[0].output_format == "mp4"


def test_a_vp8_resolution_change_needs_a_new_file(uploader):
    media = make_test_media(2.0, video_codec="vp8", switch_to=(160, 120), switch_at_s=1.0)
    changed = []

    def watch(recording, frame):
        if recording.resolution_changed(frame):
            changed.append(frame.rtp_timestamp)

    run_recording(frames(media), uploader, VP8_STREAM, on_frame=watch)
    assert changed == [1000 + 90000]  # the key frame at 1 s, and only it


def test_a_codec_change_is_seen_against_the_new_stream():
    clock = StreamClock({V: 90000, A: 48000}, sync_wait_s=0)
    recording = Recording(SPEC, VP8_STREAM, clock, None, lambda e: None)
    assert recording.codec_changed(STREAM)  # back with H.264
    assert not recording.codec_changed(VP8_STREAM)
    assert not recording.codec_changed(StreamSpec("room", "stream", "user", (STREAM.tracks[1],)))  # no video now


def test_hls_segments_are_spooled_as_parts_of_their_playlist(uploader, tmp_path):
    bucket = DestinationSpec(StorageTarget(1, "media", region="us-east-1"), remote=True, spool_root=str(tmp_path),
                             spool_max_bytes=1 << 30)
    spec = replace(SPEC, output_format="hls", fragment_seconds=1, storage=bucket)
    _, events, _ = run_recording(frames(make_test_media(3.0)), uploader, spec=spec, adapter=storage_for(spec))
    [opened] = [e for e in events if isinstance(e, protocol.FileOpened)]
    metas = [SpoolEntry(path.parent).read_meta() for path in tmp_path.glob("*/meta.json")]
    segments = [m for m in metas if m.key.endswith(".ts")]
    assert len(segments) >= 2 and all(m.closed and m.task_id == spec.task_id for m in metas)
    assert {m.file_id for m in segments} == {opened.file_id}  # the uploader reports them as the playlist's
    assert [m.file_id for m in metas if m.key == opened.file_id] == [opened.file_id]
