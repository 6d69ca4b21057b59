"""What a plain-RTP publisher did: its ``Manifest`` (every packet planned, sent or
dropped, every Sender Report, what came back), pickled by the publisher process and
loaded by the test or harness that started it."""

from __future__ import annotations

import os
import pickle
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from testkit.rtp.spec import PublisherSpec


@dataclass
class SentPacket:
    """One planned RTP packet of a track, sent or (simulated) lost."""

    kind: str
    frame_index: int
    packet_index: int  # within the frame's packet list
    capture_time_s: float
    rtp_timestamp: int  # 32-bit, as sent
    sequence_number: int  # 16-bit, as sent
    marker: bool
    payload: bytes
    datagram: bytes  # the whole RTP packet
    dropped: bool
    sent_wall: float | None = None  # time.time() when sent (None if dropped)
    sent_mono: float | None = None


@dataclass
class SentReport:
    """One RTCP Sender Report."""

    kind: str
    ssrc: int
    sent_wall: float
    ntp_timestamp: int  # 64-bit NTP of sent_wall
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    datagram: bytes


@dataclass
class Manifest:
    """What the publisher did.  ``packets`` holds the packets that became due
    (sent or dropped) in processing order; after SIGTERM, ``completed`` is
    False and later packets are missing."""

    spec: PublisherSpec
    ssrcs: dict[str, int]
    ts_bases: dict[str, int]  # RTP timestamp of capture time 0
    seq_bases: dict[str, int]
    clock_rates: dict[str, int]
    t0_wall: float  # time.time() at capture time 0
    t0_mono: float  # time.monotonic() at capture time 0
    local_ports: dict[str, int]  # e.g. "video_rtp" -> local UDP port
    foreign_ssrc: int
    packets: list[SentPacket] = field(default_factory=list)
    sender_reports: list[SentReport] = field(default_factory=list)
    garbage_sent: int = 0
    foreign_sent: int = 0
    # datagrams received on the publisher's sockets: (time.time(), socket name, bytes)
    feedback: list[tuple[float, str, bytes]] = field(default_factory=list)
    completed: bool = False
    end_wall: float | None = None

    def track_packets(self, kind: str, include_dropped: bool = True) -> list[SentPacket]:
        return [
            p for p in self.packets if p.kind == kind and (include_dropped or not p.dropped)
        ]

    def frames(self, kind: str) -> dict[int, list[SentPacket]]:
        """Packets of a track grouped by frame index."""
        grouped: dict[int, list[SentPacket]] = {}
        for p in self.track_packets(kind):
            grouped.setdefault(p.frame_index, []).append(p)
        return grouped

    def capture_wall(self, kind: str, rtp_timestamp: int) -> float:
        """Sender wall-clock capture time of an RTP timestamp (nearest wrap)."""
        delta = (rtp_timestamp - self.ts_bases[kind]) & 0xFFFFFFFF
        if delta >= 1 << 31:
            delta -= 1 << 32
        return self.t0_wall + delta / self.clock_rates[kind]


def write_manifest(manifest: Manifest, path: str | None) -> None:
    """Pickle atomically (readers never see a partial file)."""
    if not path:
        return
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        pickle.dump(manifest, f)
    os.replace(tmp, path)


def wait_manifest(
    path: str | os.PathLike,
    timeout_s: float = 60.0,
    proc: subprocess.Popen | None = None,
) -> Manifest:
    """Wait for the publisher's manifest and load it.

    With ``proc``, fail fast if the process exits without writing one.
    """
    path = Path(path)
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc is not None and proc.poll() is not None and not path.exists():
            raise RuntimeError(f"publisher exited with {proc.returncode} and no manifest")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no manifest at {path} after {timeout_s} s")
        time.sleep(0.02)
    with open(path, "rb") as f:
        return pickle.load(f)
