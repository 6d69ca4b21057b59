"""Fragmented MP4: H.264 as sent, Opus as sent (with its OpusHead).

Fragments are cut on key frames and at least every FRAGMENT_DURATION_US, so the
bytes reach storage while recording and a file cut short still plays up to the
cut.
"""

from __future__ import annotations

from engine.defaults import FRAGMENT_DURATION_US
from workers.outputs.base import SingleObjectWriter


class FragmentedMp4Writer(SingleObjectWriter):
    extension = "mp4"
    output_format = "mp4"
    keeps_opus = True
    container_format = "mp4"
    container_options = {
        "movflags": "frag_keyframe+empty_moov+default_base_moof",
        "frag_duration": str(FRAGMENT_DURATION_US),
        # Do not hold one track back for long waiting for the other to interleave.
        "max_interleave_delta": str(FRAGMENT_DURATION_US),
    }
