"""What a WebRTC publisher process is told (``PublisherSpec``) and what it reports
(``Manifest``, JSON), the raw pictures and sound it publishes, and how it is started."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
import numpy as np

from testkit.bitstream import annexb
from testkit.media import TestMedia, make_test_media
from testkit.process import PACKAGE_ROOT, child_env


@dataclass
class PublisherSpec:
    url: str
    manifest: str
    video_frames: int = 90  # 3 s at 30 fps; audio lasts as long
    audio: bool = True
    video: bool = True
    drop_video_packets: tuple[int, ...] = ()  # 0-based indices among first transmissions of video packets
    vanish: bool = False  # keep publishing until killed (manifest written once the media ran once)
    linger_s: float = 1.0  # after the last frame, before writing the manifest and closing
    video_codec: str = "h264"  # aiortc only: "h264" offers its defaults (VP8 first, then H.264), "vp8" only VP8
    audio_delay_s: float = 0.0  # aiortc only: audio leaves this late, its Sender Reports still correct
    token: str = ""  # the node's --ingest-token, sent as a bearer token (again after a 307)


@dataclass
class Manifest:
    video_aus: list[list[str]] = field(default_factory=list)  # base64 NAL units per access unit, in send order
    audio_packets: list[str] = field(default_factory=list)  # base64 Opus packets
    vp8_frames: list[str] = field(default_factory=list)  # base64 VP8 frames, in send order
    pli_received: int = 0
    fir_received: int = 0
    nack_received: int = 0
    dropped_sequence_numbers: list[int] = field(default_factory=list)
    dropped_packets: int = 0  # including retransmissions
    video_packets_sent: int = 0  # first transmissions, counted only when dropping
    offer: str = ""
    answer: str = ""
    error: str = ""
    send_lag_s: dict[str, float] = field(default_factory=dict)  # median (send - capture) per kind, aiortc
    posted_to: list[str] = field(default_factory=list)  # aiortc: each URL the offer went to (307s followed)

    def video_annexb(self) -> list[bytes]:
        return [annexb(base64.b64decode(n) for n in au) for au in self.video_aus]

    def audio(self) -> list[bytes]:
        return [base64.b64decode(p) for p in self.audio_packets]

    def vp8(self) -> list[bytes]:
        return [base64.b64decode(f) for f in self.vp8_frames]


def read_manifest(path: str | os.PathLike) -> Manifest:
    return Manifest(**json.loads(Path(path).read_text()))


def write_manifest(manifest: Manifest, path: str) -> None:
    tmp = f"{path}.tmp"
    Path(tmp).write_text(json.dumps(asdict(manifest)))
    os.replace(tmp, path)


async def start_publisher(kind: str, spec: PublisherSpec) -> asyncio.subprocess.Process:
    """``python -m testkit.whip <kind> <spec-json>``; kind: "aiortc" or "ffmpeg"."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "testkit.whip", kind, json.dumps(asdict(spec)), cwd=str(PACKAGE_ROOT), env=child_env())


def spec_from_json(raw: str) -> PublisherSpec:
    values = json.loads(raw)
    values["drop_video_packets"] = tuple(values.get("drop_video_packets", ()))
    return PublisherSpec(**values)


def raw_media(seconds: float) -> tuple[TestMedia, list]:
    """Decoded test pictures (yuv420p VideoFrames) and PCM of make_test_media."""
    media = make_test_media(duration_s=max(1.0, seconds))
    decoder = av.CodecContext.create("h264", "r")
    pictures = []
    for au in media.video:
        pictures.extend(decoder.decode(av.Packet(au.data)))
    pictures.extend(decoder.decode(None))
    return media, pictures


def pcm_s16(pcm: np.ndarray, channels: int) -> np.ndarray:
    samples = (np.clip(pcm, -1.0, 1.0) * 32767).astype(np.int16)
    return np.repeat(samples[:, None], channels, axis=1) if channels > 1 else samples[:, None]
