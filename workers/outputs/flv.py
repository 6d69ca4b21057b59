"""FLV: H.264 as sent, audio as AAC (FLV cannot hold Opus: FFmpeg aborts on it)."""

from __future__ import annotations

from workers.outputs.base import SingleObjectWriter


class FlvWriter(SingleObjectWriter):
    extension = "flv"
    output_format = "flv"
    container_format = "flv"

    def container_options(self) -> dict[str, str]:
        return {"max_interleave_delta": str(self.options.fragment_duration_us)}
