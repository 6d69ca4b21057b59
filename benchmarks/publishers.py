"""Publisher kinds: how a benchmark stream gets its media to a node (or to FFmpeg).

A kind prepares the clip once, announces a stream to the node, starts one publisher
process per stream that replays the clip with fresh timestamps, tells when the stream
is live (its Location on the node), and finally hands back what was sent. It also
says which of its stream's counters (GET on the Location) must match what was sent
(`Counters`). Nothing else in the harness depends on the kind.

`rtp`: plain RTP (testkit.rtp), announced by the harness with an SDP
offer. `whip`: FFmpeg's own WebRTC stack (benchmarks.whip_publisher): the offer/answer
happens inside the publisher process, which reports the Location it got. `whip-swarm`
and `ffmpeg-rtp`: see benchmarks.extra_publishers.
"""

from __future__ import annotations

import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from benchmarks import whip_publisher
from benchmarks.analysis import KINDS, sent_summary
from testkit.node import NodeProcess
from testkit.rtp import PublisherSpec, offer_sdp, parse_answer, start_publisher, wait_manifest


@dataclass(frozen=True)
class Counters:
    """How a kind's stream counters (per track, in the stream's stats) compare with
    what its publisher sent (per track, `analysis.sent_summary` plus the kind's own)."""

    received: tuple[tuple[str, str, str], ...]  # (stats key, sent key, what): received must be >= sent
    lost: str  # stats key: packets given up on (must be 0)
    reported: tuple[str, ...]  # stats keys copied into the results


@dataclass
class Announced:
    location: str | None  # the stream's resource (GET: stats, DELETE: unpublish); None: the publisher reports it
    spec: PublisherSpec  # with the targets the node answered
    url: str = ""  # where the publisher process publishes itself (WHIP)


class PublisherKind(Protocol):
    name: str
    audio: str  # the audio it sends, for the results
    counters: Counters
    startup_cpu_s: float  # CPU a publisher process needs (imports, loading the clip) before it is ready
    planning_cpu_s_per_clip_s: float  # and per second of media it sends (planned up front)
    connect_s: float  # how long before its first frame a ready publisher connects (0: nothing to connect)

    def prepare(self, spec: PublisherSpec) -> None: ...  # the clip, encoded once and cached on disk

    def udp_ports(self, n: int) -> int: ...  # node UDP ports the kind needs for n streams, besides RTP's

    def node_args(self, ports: tuple[int, int]) -> tuple[str, ...]: ...  # `recnode serve` options for those

    def announce(self, node: NodeProcess, room: str, stream: str, spec: PublisherSpec) -> Announced: ...

    def start(self, spec: PublisherSpec, announced: Announced, preexec_fn=None) -> subprocess.Popen: ...

    def live(self, announced: Announced, spec: PublisherSpec, process: subprocess.Popen, timeout_s: float) -> str: ...

    def sent(self, spec: PublisherSpec, process: subprocess.Popen, timeout_s: float) -> dict: ...

    def twin(self) -> PublisherKind: ...  # the plain-RTP kind that feeds FFmpeg's remux twins (--ffmpeg)


class RtpPublisher:
    """Plain RTP: SDP offer to POST /rtp/{room}/{stream}, RTP + RTCP SR over UDP
    (testkit.rtp)."""

    name = "rtp"
    audio = "Opus 48 kHz mono, 20 ms"
    counters = Counters(received=(("datagrams", "packets", "RTP packets"),), lost="jitter_lost_packets",
                        reported=("datagrams", "jitter_lost_packets", "frames"))
    startup_cpu_s = 0.7  # measured: import + load the cached clip, per publisher
    planning_cpu_s_per_clip_s = 0.005  # measured: every packet of the run is made before the first is sent
    connect_s = 0.0

    def prepare(self, spec: PublisherSpec) -> None:
        spec.clip_media()

    def udp_ports(self, n: int) -> int:
        return 0

    def node_args(self, ports: tuple[int, int]) -> tuple[str, ...]:
        return ()

    def announce(self, node: NodeProcess, room: str, stream: str, spec: PublisherSpec) -> Announced:
        answer = node.publish(room, stream, offer_sdp(spec, True, True), user_id=f"u-{stream}")
        if answer.status != 201:
            raise RuntimeError(f"publishing {room}/{stream} failed: {answer.status} {answer.body[:300]!r}")
        return Announced(answer.headers["Location"], spec.with_targets(parse_answer(answer.body.decode())))

    def start(self, spec: PublisherSpec, announced: Announced | None = None, preexec_fn=None) -> subprocess.Popen:
        return start_publisher(spec, preexec_fn=preexec_fn, stdout=subprocess.DEVNULL)

    def live(self, announced: Announced, spec: PublisherSpec, process: subprocess.Popen, timeout_s: float) -> str:
        return announced.location

    def twin(self) -> PublisherKind:
        return self

    def sent(self, spec: PublisherSpec, process: subprocess.Popen, timeout_s: float) -> dict:
        manifest = wait_manifest(spec.manifest_path, timeout_s, proc=process)
        records = {kind: [(p.frame_index, p.capture_time_s, p.sent_mono)
                          for p in manifest.track_packets(kind, include_dropped=False)] for kind in KINDS}
        summary = sent_summary(records, manifest.t0_mono, manifest.completed)
        for kind in KINDS:
            summary[kind] = {"packets": len(records[kind]), **summary[kind]}
        return summary

    @staticmethod
    def with_rtp_targets(spec: PublisherSpec, host: str, video_port: int, audio_port: int) -> PublisherSpec:
        """The same publisher aimed at another RTP receiver (FFmpeg): RTCP on port + 1."""
        return spec.with_targets({"video": (host, video_port, video_port + 1),
                                  "audio": (host, audio_port, audio_port + 1)})


class WhipPublisher:
    """WHIP: FFmpeg's WebRTC stack (PyAV's whip muxer) POSTs its own offer to
    /whip/{room}/{stream} and sends the pre-encoded clip over ICE/DTLS-SRTP
    (benchmarks.whip_publisher). The stream exists once the publisher has connected;
    the publisher reports the Location it got. Its stream counts frames and lost
    packets, not datagrams: the RTP packets FFmpeg cut the frames into are not known
    to the publisher."""

    name = "whip"
    audio = "Opus 48 kHz stereo, 20 ms"
    counters = Counters(received=(("frames", "frames", "frames"),), lost="lost",
                        reported=("packets", "frames", "lost", "nack", "dropped_frames"))
    startup_cpu_s = 0.5  # measured: import PyAV + load the cached clip, per publisher
    planning_cpu_s_per_clip_s = 0.0
    connect_s = whip_publisher.CONNECT_S

    def __init__(self):
        self.clip: Path | None = None

    def prepare(self, spec: PublisherSpec) -> None:
        self.clip = whip_publisher.ensure_clip(spec)

    def udp_ports(self, n: int) -> int:
        return 4 * n + 40  # a stream binds one ICE port (FFmpeg BUNDLEs audio and video): plenty to spare

    def node_args(self, ports: tuple[int, int]) -> tuple[str, ...]:
        return ("--webrtc-ports", "%d-%d" % ports)

    def announce(self, node: NodeProcess, room: str, stream: str, spec: PublisherSpec) -> Announced:
        quote = lambda part: urllib.parse.quote(part, safe="")  # noqa: E731
        query = urllib.parse.urlencode({"UserId": f"u-{stream}"})
        return Announced(None, spec, f"{node.base_url}/whip/{quote(room)}/{quote(stream)}?{query}")

    def start(self, spec: PublisherSpec, announced: Announced, preexec_fn=None) -> subprocess.Popen:
        return whip_publisher.start(spec, announced.url, self.clip, preexec_fn=preexec_fn)

    def live(self, announced: Announced, spec: PublisherSpec, process: subprocess.Popen, timeout_s: float) -> str:
        live = whip_publisher.wait_json(whip_publisher.live_path(spec), timeout_s, process, spec.manifest_path)
        return live["location"]

    def twin(self) -> PublisherKind:
        return RtpPublisher()

    def sent(self, spec: PublisherSpec, process: subprocess.Popen, timeout_s: float) -> dict:
        manifest = whip_publisher.wait_json(spec.manifest_path, timeout_s, process, spec.manifest_path)
        records = {kind: [tuple(r) for r in manifest[kind]] for kind in KINDS}
        return {**sent_summary(records, manifest["t0_mono"], manifest["completed"]), "error": manifest["error"]}


def publisher_kind(name: str) -> PublisherKind:
    from benchmarks.extra_publishers import FfmpegRtpPublisher, WhipSwarmPublisher

    kinds = {"rtp": RtpPublisher, "whip": WhipPublisher, "whip-swarm": WhipSwarmPublisher,
             "ffmpeg-rtp": FfmpegRtpPublisher}
    if name not in kinds:
        raise SystemExit(f"--publisher: unknown kind {name!r} ({' or '.join(kinds)})")
    return kinds[name]()
