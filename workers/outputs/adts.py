"""`.aac`: ADTS frames of AAC transcoded from the stream's Opus."""

from __future__ import annotations

from workers.outputs.base import SingleObjectWriter


class AdtsWriter(SingleObjectWriter):
    extension = "aac"
    output_format = "aac"
    video_codecs = ()
    container_format = "adts"
