"""FLV: H.264 as sent, audio as AAC (FLV cannot hold Opus: FFmpeg aborts on it)."""

from __future__ import annotations

from engine.defaults import FRAGMENT_DURATION_US
from workers.outputs.base import SingleObjectWriter


class FlvWriter(SingleObjectWriter):
    extension = "flv"
    output_format = "flv"
    container_format = "flv"
    container_options = {"max_interleave_delta": str(FRAGMENT_DURATION_US)}
