"""Publisher kinds: how a benchmark stream gets its media to a node (or to FFmpeg).

A kind announces a stream to the node, then starts one publisher process per
stream that replays the cached clip with fresh timestamps, and finally hands back
what was sent (the publisher's manifest). Only plain RTP exists today; WHIP
(WebRTC) is being integrated and plugs in here as another `PublisherKind`.
"""

from __future__ import annotations

import dataclasses
import subprocess
from dataclasses import dataclass
from typing import Protocol

from tests.helpers.api import NodeProcess
from tests.helpers.rtp_publisher import (Manifest, PublisherSpec, offer_sdp, parse_answer, start_publisher,
                                         wait_manifest)


@dataclass
class Announced:
    location: str  # the stream's resource on the node (GET: stats, DELETE: unpublish)
    spec: PublisherSpec  # with the targets the node answered


class PublisherKind(Protocol):
    name: str

    def announce(self, node: NodeProcess, room: str, stream: str, spec: PublisherSpec) -> Announced: ...

    def start(self, spec: PublisherSpec, preexec_fn=None) -> subprocess.Popen: ...

    def manifest(self, spec: PublisherSpec, process: subprocess.Popen, timeout_s: float) -> Manifest: ...


class RtpPublisher:
    """Plain RTP: SDP offer to POST /rtp/{room}/{stream}, RTP + RTCP SR over UDP
    (tests.helpers.rtp_publisher)."""

    name = "rtp"

    def announce(self, node: NodeProcess, room: str, stream: str, spec: PublisherSpec) -> Announced:
        answer = node.publish(room, stream, offer_sdp(spec, True, True), user_id=f"u-{stream}")
        if answer.status != 201:
            raise RuntimeError(f"publishing {room}/{stream} failed: {answer.status} {answer.body[:300]!r}")
        return Announced(answer.headers["Location"], spec.with_targets(parse_answer(answer.body.decode())))

    def start(self, spec: PublisherSpec, preexec_fn=None) -> subprocess.Popen:
        return start_publisher(spec, preexec_fn=preexec_fn, stdout=subprocess.DEVNULL)

    def manifest(self, spec: PublisherSpec, process: subprocess.Popen, timeout_s: float) -> Manifest:
        return wait_manifest(spec.manifest_path, timeout_s, proc=process)

    @staticmethod
    def with_rtp_targets(spec: PublisherSpec, host: str, video_port: int, audio_port: int) -> PublisherSpec:
        """The same publisher aimed at another RTP receiver (FFmpeg): RTCP on port + 1."""
        return dataclasses.replace(spec, video_rtp=(host, video_port), video_rtcp=(host, video_port + 1),
                                   audio_rtp=(host, audio_port), audio_rtcp=(host, audio_port + 1))


class WhipNotAvailable(SystemExit):
    pass


def publisher_kind(name: str) -> PublisherKind:
    if name == "rtp":
        return RtpPublisher()
    if name == "whip":
        raise WhipNotAvailable(
            "--publisher whip is not implemented yet: WebRTC/WHIP ingest is being integrated. Add a WhipPublisher "
            "to benchmarks/publishers.py (announce = WHIP offer/answer, start = a WebRTC publisher process) and "
            "register it here; everything else in the harness is publisher-agnostic.")
    raise SystemExit(f"--publisher: unknown kind {name!r} (rtp or whip)")
