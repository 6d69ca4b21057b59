"""The synthetic clip: its shape, its parameter sets, beeps exactly at the flashes."""

from __future__ import annotations

import io
import math
import pickle

import numpy as np
import pytest

from testkit import probe
from testkit.bitstream import NAL_IDR, NAL_PPS, NAL_SPS, nal_type, split_annexb
from testkit.media import AUDIO_FRAME_SAMPLES, AUDIO_RATE, CACHE_DIR, make_test_media


def test_media_is_cached_and_shaped(media):
    assert make_test_media() is media
    assert len(media.video) == 180
    assert [au.index for au in media.video if au.keyframe] == list(range(0, 180, 30))
    assert media.flash_times == (0.5, 1.5, 2.5, 3.5, 4.5, 5.5)
    assert media.beep_samples == tuple(round(t * AUDIO_RATE) for t in media.flash_times)
    assert media.pcm.dtype == np.float32 and len(media.pcm) == 6 * AUDIO_RATE
    assert media.opus_head.startswith(b"OpusHead") and media.pre_skip == 312
    assert len(media.audio) == math.ceil((len(media.pcm) + media.pre_skip) / 960)
    assert all(p.samples == AUDIO_FRAME_SAMPLES for p in media.audio)
    assert media.audio[1].time_s - media.audio[0].time_s == pytest.approx(0.02)
    assert media.audio[0].time_s == pytest.approx(-media.pre_skip / AUDIO_RATE)


def test_every_idr_carries_parameter_sets(media):
    for au in media.video:
        types = [nal_type(n) for n in split_annexb(au.data)]
        assert (NAL_IDR in types) == au.keyframe
        if au.keyframe:
            nals = split_annexb(au.data)
            assert media.sps in nals and media.pps in nals
            assert types.index(NAL_SPS) < types.index(NAL_PPS) < types.index(NAL_IDR)


def test_pcm_beeps_only_at_flash_times(media):
    onsets = probe.detect_tone_onsets(media.pcm, AUDIO_RATE)
    assert np.allclose(onsets, media.beep_samples, atol=1.5)
    silent = np.ones(len(media.pcm), bool)
    for start in media.beep_samples:
        silent[start : start + 3000] = False
    assert not media.pcm[silent].any()


class _NoClasses(pickle.Unpickler):
    def find_class(self, module, name):
        raise AssertionError(f"{module}.{name} pickled in the shared cache")


def test_clips_cached_on_disk_hold_plain_data():
    """Clips at a bitrate are kept on disk for other processes, also those of checkouts
    where this module lives elsewhere: the files name no class, and a clip read back
    from disk is the one encoded."""
    args = dict(duration_s=1.0, width=160, height=120, bitrate_kbps=200)
    encoded = make_test_media(**args)
    make_test_media.cache_clear()
    read_back = make_test_media(**args)
    assert read_back is not encoded and read_back.video == encoded.video
    files = list(CACHE_DIR.glob("plain-*.pkl"))
    assert files
    for path in files:
        _NoClasses(io.BytesIO(path.read_bytes())).load()
