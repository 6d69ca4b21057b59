"""WebM: VP8 as sent, Opus as sent (its OpusHead as CodecPrivate).

The object is written front to back and is not seekable (`workers.sink`), so the
matroska muxer cannot go back to fill in what it learns only at the end: the file has
no Duration, no Cues (seek index) and segment / cluster sizes marked unknown. Players
and FFmpeg read it fine (every frame decodes, timestamps are exact to the millisecond,
Matroska's time base), they only compute the duration by reading it through and seek
without an index. A cluster is closed at least every `fragment_duration_us`, so the
bytes reach storage while recording and a file cut short still plays up to the cut.
"""

from __future__ import annotations

from workers.outputs.base import SingleObjectWriter


class WebmWriter(SingleObjectWriter):
    extension = "webm"
    output_format = "webm"  # an extension of ours to OutputFileFormat
    video_codecs = ("vp8",)
    audio_codecs = ("opus",)
    keeps_opus = True
    container_format = "webm"

    def container_options(self) -> dict[str, str]:
        return {
            "cluster_time_limit": str(self.options.fragment_duration_us // 1000),  # milliseconds
            # Do not hold one track back for long waiting for the other to interleave.
            "max_interleave_delta": str(self.options.fragment_duration_us),
        }
