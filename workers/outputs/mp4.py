"""Fragmented MP4: H.264 as sent, Opus as sent (with its OpusHead), or AAC made
from it when the node is started with --mp4-audio aac (QuickTime, older Safari and
most editors do not play Opus in MP4).

Fragments are cut on key frames and at least every `fragment_duration_us`, so the
bytes reach storage while recording and a file cut short still plays up to the
cut.
"""

from __future__ import annotations

from workers.outputs.base import SingleObjectWriter


class FragmentedMp4Writer(SingleObjectWriter):
    extension = "mp4"
    output_format = "mp4"
    container_format = "mp4"

    def _keeps_opus(self) -> bool:
        return self.options.mp4_audio == "opus"

    def container_options(self) -> dict[str, str]:
        fragment_us = str(self.options.fragment_duration_us)
        return {
            "movflags": "frag_keyframe+empty_moov+default_base_moof",
            "frag_duration": fragment_us,
            # Do not hold one track back for long waiting for the other to interleave.
            "max_interleave_delta": fragment_us,
        }
