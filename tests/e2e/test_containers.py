"""Every container and stream type: twelve tasks on ONE room, one publisher, one run."""

import re

import av
import numpy as np
import pytest

from testkit import bitstream, probe
from testkit.node import start_record_body
from testkit.rtp import PublisherSpec, Quirks, offer_sdp, parse_answer, wait_manifest
from tests.e2e.media_checks import assert_slices_equal, recorded_path, sent_video_aus
from tests.e2e.publishing import run_publisher

FORMATS = ("mp4", "flv", "hls")
STREAM_TYPES = (1, 2, 3, 4)
AAC_FRAME_S = 1024 / 48000
OPUS_FRAME_S = 0.020
EXPECTED_FILES = {  # (format, stream type) -> [(extension, MediaTrackType)]
    **{(f, 1): [("m3u8" if f == "hls" else f, 1)] for f in FORMATS},
    **{(f, 2): [("m3u8" if f == "hls" else f, 2)] for f in FORMATS},
    **{(f, 3): [("m3u8" if f == "hls" else f, 3)] for f in FORMATS},
    ("mp4", 4): [("mp4", 2), ("aac", 1)],
    ("flv", 4): [("flv", 2), ("aac", 1)],
    ("hls", 4): [("m3u8", 2), ("m3u8", 1)],
}

COMBOS = [(f, s) for f in FORMATS for s in STREAM_TYPES]
SHORT_FRAGMENT_PATH = {combo: index % 2 == 0 for index, combo in enumerate(COMBOS)}  # each format gets both


@pytest.fixture(scope="module")
def recorded(node, tmp_path_factory):
    """Publish one stream, record it twelve ways at once; returns (spec, manifest, {combo: data})."""
    spec = PublisherSpec(duration_s=6.0, quirks=Quirks(audio_delay_s=0.2))
    answer = node.publish("room-all", "cam", offer_sdp(spec, True, True), user_id="u1")
    assert answer.status == 201
    tasks = {}
    for fmt, stream_type in COMBOS:
        body = start_record_body("room-all")
        body["RecordInputParams"]["StreamType"] = stream_type
        body["RecordOutputParams"].update(OutputFileFormat=fmt, OutputFolder=f"{fmt}-{stream_type}/",
                                          FragmentSeconds=2,
                                          ShortFragmentPath=SHORT_FRAGMENT_PATH[(fmt, stream_type)],
                                          RealtimeUploadFragment=stream_type in (3, 4))
        tasks[(fmt, stream_type)] = node.ok("StartRecord", body)["TaskId"]
    process, spec = run_publisher(spec, parse_answer(answer.body.decode()), tmp_path_factory.mktemp("pub"))
    manifest = wait_manifest(spec.manifest_path, proc=process)
    data = {}
    for combo, task_id in tasks.items():
        node.ok("StopRecord", {"TaskId": task_id})
    for combo, task_id in tasks.items():
        data[combo] = node.wait_task(task_id, lambda d: d["RecordFiles"] and all(f["Status"] == 3 for f in d["RecordFiles"]))
    node.unpublish(answer.headers["Location"])
    return spec, manifest, data


def decoded_mono(path) -> np.ndarray:
    chunks = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            chunks.append(frame.to_ndarray().astype(np.float32).reshape(frame.layout.nb_channels, -1).mean(axis=0)
                          if frame.format.is_planar else
                          frame.to_ndarray().astype(np.float32).reshape(-1, frame.layout.nb_channels).mean(axis=1))
    return np.concatenate(chunks)


def tone_correlation(recorded_pcm: np.ndarray, sent_pcm: np.ndarray, max_lag: int = 4800) -> float:
    """Best normalised correlation of the recording with the sent signal over small lags."""
    best = 0.0
    n = min(len(recorded_pcm), len(sent_pcm)) - max_lag
    a = sent_pcm[max_lag:max_lag + n]
    for lag in range(0, 2 * max_lag, 8):
        b = recorded_pcm[lag:lag + n]
        if len(b) < n:
            break
        denom = np.linalg.norm(a) * np.linalg.norm(b)
        if denom:
            best = max(best, float(np.dot(a, b) / denom))
    return best


@pytest.mark.parametrize("combo", COMBOS, ids=[f"{f}-st{s}" for f, s in COMBOS])
def test_files_listed_and_measured(node, recorded, combo):
    spec, manifest, data = recorded
    files = data[combo]["RecordFiles"]
    assert [(f["FileId"].rsplit(".", 1)[1], f["MediaTrackType"]) for f in files] == EXPECTED_FILES[combo]
    for entry in files:
        path = recorded_path(node, entry)
        fmt = {"m3u8": "hls"}.get(path.suffix[1:], path.suffix[1:])
        assert entry["OutputFileFormat"] == fmt
        letter = {1: "A", 2: "V", 3: "VA"}[entry["MediaTrackType"]]
        assert f"_{letter}_" in entry["FileId"]
        on_disk = path.stat().st_size
        if fmt == "hls":
            on_disk += sum(p.stat().st_size for p in path.parent.glob(path.stem + "_*.ts"))
        assert entry["FileSize"] == on_disk
        has_video = entry["MediaTrackType"] & 2
        assert (entry["ResolutionWidth"], entry["ResolutionHeight"]) == ((320, 240) if has_video else (0, 0))
        assert abs(entry["Duration"] / 1000 - spec.duration_s) <= 1 / spec.clip.fps + AAC_FRAME_S


@pytest.mark.parametrize("combo", COMBOS, ids=[f"{f}-st{s}" for f, s in COMBOS])
def test_media_is_exactly_what_was_published(node, recorded, combo):
    spec, manifest, data = recorded
    media = spec.media()
    for entry in data[combo]["RecordFiles"]:
        path = recorded_path(node, entry)
        report = probe.decode_all(path)
        assert report.errors == (), report.errors
        if entry["MediaTrackType"] & 2:
            assert report.video_frames == len(media.video)
            assert_slices_equal(path, sent_video_aus(manifest))
            assert abs(report.video_duration_s - spec.duration_s) <= 1 / spec.clip.fps + AAC_FRAME_S
        else:
            assert report.video_frames == 0
        if entry["MediaTrackType"] & 1:
            kept_opus = path.suffix == ".mp4"
            assert report.audio_codec == ("opus" if kept_opus else "aac")
            if kept_opus:
                sent = [p.data for p in media.audio]
                got = bitstream.opus_packets_from_file(path)
                assert got == sent[len(sent) - len(got):] and len(sent) - len(got) <= 2
            frame = OPUS_FRAME_S if kept_opus else AAC_FRAME_S
            # sent after the start: an audio-only recording starts on the first packet, the rest on the key frame
            origin = float("-inf") if combo[1] == 1 else 0.0
            sent = sum(p.samples for p in media.audio if p.time_s >= origin) / 48000
            assert abs(report.audio_duration_s - sent) <= max(0.005 * sent, 1 / spec.clip.fps + frame)
            assert tone_correlation(decoded_mono(path), media.pcm) >= 0.9
        else:
            assert report.audio_frames == 0
        if entry["MediaTrackType"] == 3:
            offsets = probe.av_offsets(path)
            assert len(offsets) == len(media.flash_times)
            assert max(abs(o) for o in offsets) <= 0.020, offsets


HLS = [(("hls", s), i) for s in STREAM_TYPES for i in range(len(EXPECTED_FILES[("hls", s)]))]


@pytest.mark.parametrize("combo, index", HLS, ids=[f"st{c[1]}-{i}" for c, i in HLS])
def test_hls_playlists(node, recorded, combo, index):
    spec, manifest, data = recorded
    entry = data[combo]["RecordFiles"][index]
    path = recorded_path(node, entry)
    text = path.read_text()
    assert text.startswith("#EXTM3U\n")
    assert "#EXT-X-MEDIA-SEQUENCE:0\n" in text and "#EXT-X-PLAYLIST-TYPE:VOD\n" in text
    assert text.rstrip().endswith("#EXT-X-ENDLIST")
    lines = text.splitlines()
    durations = [float(re.match(r"#EXTINF:([\d.]+),", line).group(1)) for line in lines if line.startswith("#EXTINF")]
    segments = [line for line in lines if line and not line.startswith("#")]
    on_disk = sorted(p.name for p in path.parent.glob(path.stem + "_*.ts"))
    names = [s.rsplit("/", 1)[-1] for s in segments]
    assert sorted(names) == on_disk and len(set(names)) == len(names) == len(durations) >= 3
    # On the node's disk (Vendor 0, these tasks) segments are always listed by name: they resolve beside the
    # playlist through the node's signed /recordings/ link (buckets: tests/workers/test_outputs.py)
    assert segments == names, segments
    frame_s = 1 / spec.clip.fps + (AAC_FRAME_S if entry["MediaTrackType"] == 1 else 0)
    assert abs(sum(durations) - spec.duration_s) <= frame_s
    assert max(durations) <= 2 + 1 / spec.clip.fps
    if entry["MediaTrackType"] & 2:
        for name in names:
            with av.open(str(path.parent / name)) as segment:
                first = next(p for p in segment.demux(video=0) if p.size)
                assert first.is_keyframe, name
