"""``python -m testkit.whip {aiortc|ffmpeg} <spec-json>``: one WebRTC publisher process."""

import signal
import sys

from testkit.whip.aiortc_publisher import run_aiortc
from testkit.whip.ffmpeg_publisher import run_ffmpeg
from testkit.whip.spec import spec_from_json


def main(argv: list[str] | None = None) -> int:
    kind, raw = sys.argv[1:] if argv is None else argv
    spec = spec_from_json(raw)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    {"aiortc": run_aiortc, "ffmpeg": run_ffmpeg}[kind](spec)
    return 0


sys.exit(main())
