"""mp3: the stream's Opus decoded and encoded as MP3; RecordMuteAudio 2 leaves muted
audio out, RecordMuteAudioSplitThreshold starts a new file after a mute that long.

The test clip is digital silence with a 60 ms 1 kHz beep every second (at 0.5 s,
1.5 s, ...): a muted microphone with a few words."""

import asyncio
from dataclasses import replace
from pathlib import Path

import av
import numpy as np

from contract import protocol
from contract.codes import MediaKind
from contract.storage import DestinationSpec, StorageTarget
from contract.tuning import MediaTuning
from contract.worker import TrackSpec
from testkit import probe
from testkit.media import make_test_media
from tests.e2e.test_containers import decoded_mono, tone_correlation
from tests.workers.test_recording import SPEC, STREAM, frames
from workers.codecs import aac
from workers.frames import EncodedFrame
from workers.mute import MuteGate
from workers.outputs.audio import audio_params
from workers.recordings import StreamRecordings

BEEPS_S = (0.5, 1.5, 2.5, 3.5, 4.5)
SOUND_PACKET_MAX_S = 0.12  # a beep and the packets that ring after it


def mp3_spec(tmp_path: Path, **changes):
    storage = DestinationSpec(StorageTarget(0, "bucket", local_root=str(tmp_path)), remote=False)
    return replace(SPEC, output_format="mp3", storage=storage, **changes)


def record(stream_frames, spec, tick_every_s=0.05, stream=STREAM):
    """Through StreamRecordings, as a worker does: (the files by begin time, the events)."""
    events = []

    async def run():
        recordings = StreamRecordings(stream, MediaTuning(sync_wait_for_sr_s=0), events.append, lambda: True)
        recordings.start(spec, stream_frames[0].arrival)
        now = stream_frames[0].arrival
        for frame in stream_frames:
            while now + tick_every_s < frame.arrival:  # the worker's timer, also while nothing arrives
                now += tick_every_s
                recordings.tick(now)
            now = frame.arrival
            recordings.on_frame(frame, now)
        await recordings.close_all()

    asyncio.run(run())
    root = Path(spec.storage.target.local_root) / "bucket"
    opened = [e for e in events if isinstance(e, protocol.FileOpened)]
    return [root / e.file_id for e in opened], events


def onsets(path: Path) -> list[float]:
    return [round(t, 3) for t in probe.beep_times(path)]


def test_mp3_holds_the_published_tone(tmp_path):
    media = make_test_media(5.0)
    [path], events = record(frames(media), mp3_spec(tmp_path))  # StreamType 3: the audio only
    assert path.suffix == ".mp3" and "_A_" in path.name
    opened = next(e for e in events if isinstance(e, protocol.FileOpened))
    assert (opened.output_format, opened.media_track_type, opened.width) == ("mp3", 1, 0)
    report = probe.decode_all(path)
    assert report.errors == () and report.audio_codec.startswith("mp3") and report.video_frames == 0
    with av.open(str(path)) as container:
        assert container.format.name == "mp3" and container.streams.audio[0].bit_rate == 128_000
    assert abs(report.audio_duration_s - 5.0) < 0.1
    beeps = np.array(onsets(path))
    assert len(beeps) == len(BEEPS_S) and np.allclose(np.diff(beeps), 1.0, atol=0.002)  # the tone, on time
    assert tone_correlation(decoded_mono(path), media.pcm) >= 0.9


def test_muted_audio_left_out(tmp_path):
    media = make_test_media(5.0)
    [path], _ = record(frames(media), mp3_spec(tmp_path, skip_mute_audio=True))
    beeps = onsets(path)
    assert len(beeps) == len(BEEPS_S)
    assert probe.decode_all(path).audio_duration_s <= len(BEEPS_S) * SOUND_PACKET_MAX_S + 0.05
    assert max(np.diff(beeps)) <= SOUND_PACKET_MAX_S  # back to back: the mute between them is gone


def test_a_mute_as_long_as_the_threshold_starts_a_new_file(tmp_path):
    media = make_test_media(5.0)
    paths, events = record(frames(media), mp3_spec(tmp_path, skip_mute_audio=True, mute_split_s=0))
    assert len(paths) == len(BEEPS_S) and len({p.name for p in paths}) == len(paths)
    assert [len(onsets(p)) for p in paths] == [1] * len(BEEPS_S)
    closed = [e for e in events if isinstance(e, protocol.FileClosed)]
    assert len(closed) == len(paths) and all(e.ok for e in closed)


def test_a_shorter_mute_does_not_split(tmp_path):
    media = make_test_media(5.0)
    paths, _ = record(frames(media), mp3_spec(tmp_path, skip_mute_audio=True, mute_split_s=2))
    assert len(paths) == 1 and len(onsets(paths[0])) == len(BEEPS_S)


def test_no_packets_at_all_is_mute_too(tmp_path):
    """A publisher that sends nothing while muted (DTX, a stopped track): only the beeps' packets."""
    media = make_test_media(5.0)
    gate = MuteGate(audio_params(STREAM.tracks[1]), None)
    sounding = [f for f in frames(media) if f.kind is MediaKind.AUDIO and gate.is_sound(f)]
    paths, _ = record(sounding, mp3_spec(tmp_path, skip_mute_audio=True, mute_split_s=0))
    assert [len(onsets(p)) for p in paths] == [1] * len(BEEPS_S)
    [whole], _ = record(sounding, mp3_spec(tmp_path / "unsplit", skip_mute_audio=True))
    assert probe.decode_all(whole).audio_duration_s <= len(BEEPS_S) * SOUND_PACKET_MAX_S + 0.05  # not filled


def test_muted_audio_is_recorded_by_default(tmp_path):
    media = make_test_media(5.0)
    gate = MuteGate(audio_params(STREAM.tracks[1]), None)
    sounding = [f for f in frames(media) if f.kind is MediaKind.AUDIO and gate.is_sound(f)]
    [path], _ = record(sounding, mp3_spec(tmp_path))  # RecordMuteAudio 1: the holes are silence
    assert abs(probe.decode_all(path).audio_duration_s - (BEEPS_S[-1] - BEEPS_S[0] + 0.1)) < 0.1
    assert np.allclose(np.diff(onsets(path)), 1.0, atol=0.002)


def test_aac_audio_becomes_mp3_too(tmp_path):
    """An RTSP camera's AAC-LC (kept as sent in the other containers) is transcoded as Opus is."""
    media = make_test_media(3.0)
    encoder = aac.encoder_for(48000, 1)
    chunk = aac.FRAME_SAMPLES
    packets = []
    for start in range(0, len(media.pcm) - chunk + 1, chunk):
        frame = av.AudioFrame.from_ndarray(media.pcm[None, start:start + chunk], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 48000, start
        packets.extend(encoder.encode(frame))
    track = TrackSpec(MediaKind.AUDIO, "aac", 97, 48000, 1, (("config", bytes(encoder.extradata).hex()),))
    camera = replace(STREAM, tracks=(track,))
    frames_in = [EncodedFrame(MediaKind.AUDIO, bytes(p), 1000 + p.pts, 10 + p.pts / 48000) for p in packets]
    [whole], _ = record(frames_in, mp3_spec(tmp_path), stream=camera)
    assert np.allclose(np.diff(onsets(whole)), 1.0, atol=0.002) and len(onsets(whole)) == 3
    [muted_out], _ = record(frames_in, mp3_spec(tmp_path / "skip", skip_mute_audio=True), stream=camera)
    sounding_s = 3 * 4 * aac.FRAME_SAMPLES / 48000  # three beeps of four AAC frames each
    assert onsets(muted_out) and probe.decode_all(muted_out).audio_duration_s <= sounding_s + 0.05
