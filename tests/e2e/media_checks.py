"""Shared assertions about a recorded file against what the publisher sent."""

from __future__ import annotations

from pathlib import Path

from testkit import bitstream, probe
from testkit.rtp import Manifest


def recorded_path(node, file_entry: dict) -> Path:
    """Where a Vendor 0 file is on the node's disk, from its FileUrl (a signed link
    into the node's /recordings/<Bucket>/<key>)."""
    from urllib.parse import unquote, urlparse

    url = urlparse(file_entry["FileUrl"])
    assert f"{url.scheme}://{url.netloc}" == node.base_url and url.path.startswith("/recordings/"), url
    assert "Signature=" in url.query and "Expires=" in url.query
    path = node.data_dir / "storage" / unquote(url.path[len("/recordings/"):])
    assert path.resolve().is_relative_to((node.data_dir / "storage").resolve())
    return path


def sent_video_aus(manifest: Manifest, skip_frames: set[int] = frozenset()) -> list[bytes]:
    media = manifest.spec.media()
    return [au.data for au in media.video if au.index not in skip_frames]


def assert_slices_equal(path: Path, expected_aus: list[bytes]) -> None:
    got = bitstream.h264_slice_nals_from_file(path)
    want = bitstream.h264_slice_nals_from_aus(expected_aus)
    assert len(got) == len(want), (len(got), len(want))
    assert got == want


def assert_opus_tail_equal(path: Path, manifest: Manifest, max_skipped: int = 2) -> None:
    """The file's Opus packets are exactly the published ones, from (nearly) the
    first on: packets captured before the first video key frame are left out."""
    sent = [p.data for p in manifest.spec.media().audio]
    got = bitstream.opus_packets_from_file(path)
    skipped = len(sent) - len(got)
    assert 0 <= skipped <= max_skipped, (len(sent), len(got))
    assert got == sent[skipped:]


def duration_tolerance(fps: int) -> float:
    return 1 / fps + 0.020  # one video frame + one audio frame; 0.5 % is smaller at these lengths


def assert_recorded_as_sent(path: Path, entry: dict, manifest: Manifest) -> probe.DecodeReport:
    """A whole plain-RTP stream in one file: it decodes, holds the published video and audio,
    and lasts (decoded, and as reported in `entry`) as long as was published."""
    report = probe.decode_all(path)
    assert report.errors == ()
    assert_slices_equal(path, sent_video_aus(manifest))
    assert_opus_tail_equal(path, manifest)
    spec = manifest.spec
    tolerance = duration_tolerance(spec.clip.fps)
    assert abs(report.video_duration_s - spec.duration_s) <= tolerance
    assert abs(report.audio_duration_s - spec.duration_s) <= tolerance
    assert abs(entry["Duration"] / 1000 - spec.duration_s) <= tolerance
    return report


FRAGMENT_MAX_S = 1.0  # README: fragments are cut on key frames and at least every second


def recorded_frame_indices(path: Path, manifest: Manifest) -> list[int]:
    """Which published video frames a file holds (by their slices: one slice per frame in these clips)."""
    sent = bitstream.h264_slice_nals_from_aus(sent_video_aus(manifest))
    indices, at = [], 0
    for nal in bitstream.h264_slice_nals_from_file(path):  # in order: each found after the one before
        at = sent.index(nal, at)
        indices.append(at)
        at += 1
    return indices


def frames_sent_by(manifest: Manifest, monotonic_s: float) -> int:
    """How many video frames the publisher had sent whole by `monotonic_s` (its own send times)."""
    return sum(1 for packets in manifest.frames("video").values()
               if all(p.sent_mono is not None and p.sent_mono <= monotonic_s for p in packets))


def assert_lost_at_most_a_fragment(path: Path, manifest: Manifest, killed_mono: float) -> float:
    """A file cut short by a kill at `killed_mono` holds every frame sent up to one
    fragment before it (plus the 50 ms socket-read tick and a frame in transit)."""
    last = recorded_frame_indices(path, manifest)[-1]
    lost_s = (frames_sent_by(manifest, killed_mono) - 1 - last) / manifest.spec.clip.fps
    assert lost_s <= FRAGMENT_MAX_S + 0.05 + 1 / manifest.spec.clip.fps, f"lost {lost_s:.3f} s"
    return lost_s
