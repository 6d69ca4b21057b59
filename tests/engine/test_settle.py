"""Reading what a file really lasts from storage (engine.media_span, engine.settle):
files the workers' own writers made, cut where a killed worker could have left
them, checked against what FFmpeg demuxes from the same bytes."""

from __future__ import annotations

import re

import av
import pytest

from contract.storage import StorageTarget
from engine import media_span, settle
from storage_adapters.destination import destination_for
from storage_adapters.local import LocalAdapter
from storage_adapters.memory import MemoryStore
from storage_adapters.readback import ReadBudget, ReadBudgetExceeded, StoredObject
from tests.helpers.recorded import FPS, record_clip
from tests.storage.twins import PART, twin_destination
from workers.outputs.adts import AdtsWriter
from workers.outputs.flv import FlvWriter
from workers.outputs.hls import HlsWriter
from workers.outputs.mp4 import FragmentedMp4Writer

BIG = 1 << 30


def stored(path, budget: ReadBudget | None = None) -> StoredObject:
    return StoredObject.open(LocalAdapter(path.parent.parent.parent, path.parent.parent.name),
                             f"{path.parent.name}/{path.name}", budget or ReadBudget(BIG))


def demuxed(path, cut: int | None = None) -> tuple[float, float] | None:
    """FFmpeg's view: (first pts, end of the last packet whose bytes are all within `cut`)."""
    starts, ends = [], []
    try:
        with av.open(str(path)) as container:
            for packet in container.demux():
                if packet.pts is None or (cut is not None and packet.pos + packet.size > cut):
                    continue
                starts.append(float(packet.pts * packet.time_base))
                ends.append(float((packet.pts + packet.duration) * packet.time_base))
    except av.FFmpegError:
        pass
    return (min(starts), max(ends)) if starts else None


@pytest.fixture(scope="module")
def mp4(tmp_path_factory):
    return record_clip(FragmentedMp4Writer, tmp_path_factory.mktemp("mp4"), 5.5)


def test_a_finished_fmp4_lasts_what_ffmpeg_demuxes(mp4):
    span = media_span.fmp4_span(stored(mp4))
    assert (span.start_s, round(span.end_s, 4)) == tuple(round(v, 4) for v in demuxed(mp4))
    assert abs(span.duration_s - 5.5) < 0.03


def test_an_fmp4_cut_anywhere_lasts_until_its_last_whole_sample(mp4, tmp_path):
    data = mp4.read_bytes()
    cut_path = tmp_path / "b" / "f" / "cut.mp4"
    cut_path.parent.mkdir(parents=True)
    previous = 0.0
    for cut in range(1000, len(data), 2311):
        cut_path.write_bytes(data[:cut])
        span = media_span.fmp4_span(stored(cut_path))
        expected = demuxed(mp4, cut)  # the samples whose bytes are all stored
        if span is None:
            assert expected is None, cut
            continue
        assert expected is not None and abs(span.end_s - expected[1]) < 1e-6, (cut, span, expected)
        assert span.end_s >= previous
        previous = span.end_s


def test_the_mfra_index_saves_walking_every_fragment(mp4, tmp_path):
    data = mp4.read_bytes()
    unfinished = tmp_path / "b" / "f" / "unfinished.mp4"
    unfinished.parent.mkdir(parents=True)
    unfinished.write_bytes(data[:data.rindex(b"mfra") - 4])  # what a killed worker leaves: no index
    walked, jumped = ReadBudget(BIG), ReadBudget(BIG)
    assert media_span.fmp4_span(stored(unfinished, walked)) == media_span.fmp4_span(stored(mp4, jumped))
    assert jumped.requests < walked.requests


@pytest.fixture
def hls(tmp_path):
    return record_clip(HlsWriter, tmp_path, 5.5)  # segments of 2 + 2 + 1.5 s


def local_destination(root):
    return destination_for(StorageTarget(0, "b"), None, root, root / "spool", BIG)


def extinf(text: str) -> list[float]:
    return [float(v) for v in re.findall(r"#EXTINF:([\d.]+),", text)]


def test_ts_segments_start_and_end_where_ffmpeg_demuxes_them(hls):
    for index in range(3):
        segment = hls.parent / f"s_{index}.ts"
        with av.open(str(segment)) as container:
            video = [float(p.pts * p.time_base) for p in container.demux(video=0) if p.pts is not None]
        span = media_span.ts_span(stored(segment))
        assert span.start_s == pytest.approx(video[0], abs=1e-6)
        assert span.end_s == pytest.approx(video[-1] + 1 / FPS, abs=1e-6)


def test_a_finished_playlist_is_kept_as_the_worker_wrote_it(hls, tmp_path):
    written = hls.read_bytes()
    result = settle.measure(local_destination(tmp_path), "f/s.m3u8", "hls", full_segment_urls=False, budget_bytes=BIG)
    assert hls.read_bytes() == written
    stored_bytes = sum(p.stat().st_size for p in hls.parent.iterdir())
    assert (result.size, result.duration_ms) == (stored_bytes, 5500)


@pytest.mark.parametrize("left", ["none", "event", "last-zero"])
def test_an_unfinished_playlist_is_written_again_from_the_stored_segments(hls, tmp_path, left):
    final = hls.read_text()
    if left == "none":  # the worker died before its first realtime playlist
        hls.unlink()
    elif left == "event":  # a realtime playlist: the segments before the last one, no end
        hls.write_text(final.replace("VOD", "EVENT").rsplit("#EXTINF", 1)[0])
    else:  # what FFmpeg wrote for a last segment of one frame before the fix
        hls.write_text(re.sub(r"#EXTINF:1\.500000,", "#EXTINF:0.000000,", final))
    junk = hls.parent / "s_3.ts"
    junk.write_bytes((hls.parent / "s_0.ts").read_bytes()[:376])  # opened, then killed: tables, no media
    result = settle.measure(local_destination(tmp_path), "f/s.m3u8", "hls", full_segment_urls=False, budget_bytes=BIG)
    assert hls.read_text() == final  # as the worker would have finished it
    assert result.size == sum(p.stat().st_size for p in hls.parent.iterdir()) - junk.stat().st_size
    assert result.duration_ms == 5500 and extinf(final) == [2.0, 2.0, 1.5]


def test_a_playlist_names_segments_by_url_when_the_task_asked(hls, tmp_path):
    hls.unlink()
    settle.measure(local_destination(tmp_path), "f/s.m3u8", "hls", full_segment_urls=True, budget_bytes=BIG)
    uris = [line for line in hls.read_text().splitlines() if not line.startswith("#")]
    assert uris == [(hls.parent / f"s_{i}.ts").as_uri() for i in range(3)]


def test_a_bucket_is_read_back_and_its_playlist_put_again(hls, tmp_path):
    bucket = MemoryStore("b", min_part_size=PART)
    for path in hls.parent.iterdir():
        if path.name != "s.m3u8":  # only segments reached the bucket
            bucket.objects[f"f/{path.name}"] = path.read_bytes()
    final = hls.read_bytes()
    result = settle.measure(twin_destination(tmp_path / "spool", bucket), "f/s.m3u8", "hls",
                            full_segment_urls=False, budget_bytes=BIG)
    assert bucket.objects["f/s.m3u8"] == final and result.duration_ms == 5500
    assert "read" in {op for op, _, _ in bucket.calls}


def test_an_audio_only_playlist_is_rebuilt_from_its_aac(tmp_path):
    playlist = record_clip(HlsWriter, tmp_path, 5.0, video=False)
    written = extinf(playlist.read_text())
    playlist.unlink()
    result = settle.measure(local_destination(tmp_path), "f/s.m3u8", "hls", full_segment_urls=False, budget_bytes=BIG)
    rebuilt = extinf(playlist.read_text())
    assert len(rebuilt) == len(written) >= 2
    assert all(abs(a - b) <= 1024 / 48000 for a, b in zip(rebuilt, written)), (rebuilt, written)  # + AAC padding
    assert abs(result.duration_ms / 1000 - sum(written)) <= 1024 / 48000


@pytest.mark.parametrize("writer", [FlvWriter, AdtsWriter])
def test_other_containers_last_until_their_last_packet_ends(tmp_path, writer):
    path = record_clip(writer, tmp_path, 4.5, video=writer is FlvWriter)
    full = media_span.demuxed_span(stored(path))
    assert abs(full.duration_s - 4.5) <= 1 / FPS
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])  # a killed worker's half
    half = media_span.demuxed_span(stored(path))
    assert 1.0 < half.duration_s < full.duration_s


def test_reading_back_stops_at_the_budget(mp4, hls, tmp_path):
    root = mp4.parent.parent.parent
    result = settle.measure(local_destination(root), "f/s.mp4", "mp4", full_segment_urls=False, budget_bytes=10_000)
    assert result == settle.Stored(mp4.stat().st_size, None)  # its size, but no reading through it
    with pytest.raises(ReadBudgetExceeded):  # not even every segment could be opened
        settle.measure(local_destination(tmp_path), "f/s.m3u8", "hls", full_segment_urls=False, budget_bytes=10_000)


def test_nothing_stored_is_none(tmp_path):
    for fmt, key in (("mp4", "f/none.mp4"), ("hls", "f/none.m3u8")):
        assert settle.measure(local_destination(tmp_path), key, fmt, full_segment_urls=False, budget_bytes=BIG) is None
