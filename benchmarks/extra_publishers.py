"""Two more publisher kinds (see benchmarks.publishers for the protocol):

`whip-swarm`: WebRTC as `whip`, but from a load generator that cannot be the
bottleneck: ONE process per level (benchmarks.whip_swarm) drives every stream's peer,
aiortc negotiating each once and the pre-packetized clip going out through the
peer's SRTP session. Same clip, same counters, same manifest as `whip`.

`ffmpeg-rtp`: plain RTP from a sender that is not ours, Debian's `ffmpeg -re -c copy
-f rtp` with 1200-byte packets (benchmarks.ffmpeg_publisher), announced to the node
with an SDP offer as `rtp` is. FFmpeg does not tell how many RTP packets it sent, so
its streams are checked by frames (and no packet lost).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from benchmarks import ffmpeg_publisher, whip_swarm
from benchmarks.ffmpeg_ref import require_ffmpeg
from benchmarks.publishers import Announced, Counters, RtpPublisher, WhipPublisher
from testkit.process import start_module
from testkit.rtp import PublisherSpec


class WhipSwarmPublisher(WhipPublisher):
    name = "whip-swarm"
    startup_cpu_s = 0.05  # per peer (certificate, offer, ICE, DTLS); the process itself starts once per level
    connect_s = whip_swarm.CONNECT_S

    def __init__(self):
        super().__init__()
        self.swarms: dict[Path, subprocess.Popen] = {}  # by level folder: one process per level

    def start(self, spec: PublisherSpec, announced: Announced, preexec_fn=None) -> subprocess.Popen:
        level = Path(spec.manifest_path).parent
        swarm = self.swarms.get(level)
        if swarm is None or swarm.poll() is not None:
            swarm = self.swarms[level] = whip_swarm.start(self.clip, preexec_fn=preexec_fn)
        whip_swarm.add_peer(swarm, spec, announced.url)
        return swarm


class FfmpegRtpPublisher(RtpPublisher):
    name = "ffmpeg-rtp"
    audio = "Opus 48 kHz mono, 20 ms"
    counters = Counters(received=(("frames", "frames", "frames"),), lost="jitter_lost_packets",
                        reported=("datagrams", "jitter_lost_packets", "frames"))
    startup_cpu_s = 0.15  # measured: a small Python process that waits, then ffmpeg
    planning_cpu_s_per_clip_s = 0.0

    def __init__(self):
        self.binary = require_ffmpeg()
        self.clip: Path | None = None

    def prepare(self, spec: PublisherSpec) -> None:
        self.clip = ffmpeg_publisher.ensure_clip(spec)

    def start(self, spec: PublisherSpec, announced: Announced | None = None, preexec_fn=None) -> subprocess.Popen:
        Path(spec.manifest_path).unlink(missing_ok=True)
        request = {"command": ffmpeg_publisher.command(self.binary, self.clip, spec), "start_time": spec.start_time,
                   "frames": f"{self.clip}.frames.json", "manifest": spec.manifest_path}
        return start_module("benchmarks.ffmpeg_publisher", json.dumps(request), preexec_fn=preexec_fn,
                            stdout=subprocess.DEVNULL)

    def sent(self, spec: PublisherSpec, process: subprocess.Popen, timeout_s: float) -> dict:
        return WhipPublisher.sent(self, spec, process, timeout_s)
