"""Shared assertions about a recorded file against what the publisher sent."""

from __future__ import annotations

from pathlib import Path

from testkit import bitstream
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
