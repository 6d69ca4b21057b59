"""The fast WHIP publisher: one process, one asyncio loop, many WebRTC peers.

    python -m benchmarks.whip_swarm CLIP.nut      # then one JSON line per peer on stdin:
    {"spec": <PublisherSpec JSON>, "url": <WHIP endpoint>}

A benchmark must measure the node, not its load generator. `benchmarks.whip_publisher`
(FFmpeg's WHIP muxer, one process per stream) costs about as much CPU per stream as the
node does. Here aiortc negotiates each peer once (POST of its offer, ICE, DTLS), and
the media bypasses aiortc: the clip (the NUT file of `whip_publisher.ensure_clip`,
the same H.264 and stereo Opus packets FFmpeg's publisher sends) is cut into RTP
payloads once per process (`RtpClip`, aiortc's H.264 packetizer); a peer's packet is
then a 12-byte header (its SSRC, sequence number, timestamp) + the shared payload, one
SRTP `protect` with the peer's own session and one `sendto` (`testkit.whip.aiortc_wire`
holds every aiortc internal this needs). aiortc's own RTCP loop still sends Sender
Reports, fed with what the wire sent (capture time <-> RTP timestamp), and its ICE
agent still answers the node's consent checks.

One scheduler sends every peer's due frames: a heap of (due time, peer). A peer
connects as soon as it is added (at most `CONCURRENT_CONNECTS` handshakes at once: a
hundred peers told to connect in the same second would all time out together),
writes `<manifest>.live.json` (the Location the node gave it) and sends frame i of
the clip at `spec.start_time` (wall) + capture time of i; a peer connected too late
sends what is overdue at once, and its manifest shows how late. When its clip is sent it writes its manifest, in
`whip_publisher`'s format (`t0_mono`, `completed`, `error`, per track
[frame index, capture time, time.monotonic() when sent]), and keeps its session until
SIGTERM, so that the harness reads the stream's counters first. A peer that fails
writes a manifest with `error` and no live file.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import random
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from benchmarks.whip_publisher import REPO_ROOT, live_path, load_clip, write_json
from testkit.process import child_env
from testkit.rtp import PublisherSpec
from testkit.rtp.plan import packetize_h264
from testkit.rtp.send import ntp_from_unix
from testkit.whip.aiortc_wire import SrtpWire, loopback_only

CONNECT_S = 3.0  # the harness gives a peer at least this long before its first frame
CONCURRENT_CONNECTS = 8  # handshakes under way at once (they queue for the one load CPU anyway)
CONNECTED_TIMEOUT_S = 20.0
CLOCK_RATES = {"video": 90_000, "audio": 48_000}
RTP_HEADER = struct.Struct("!BBHII")
EARLY_S = 0.001  # frames due this soon are sent in the same wakeup


@dataclass(frozen=True)
class ClipFrame:
    capture_s: float  # from the first video frame
    kind: str
    index: int  # among the track's frames
    rtp_offset: int  # capture time in the track's clock
    payloads: tuple[bytes, ...]  # RTP payloads; the marker bit is on the last one
    octets: int


def rtp_clip(path: Path) -> list[ClipFrame]:
    """Every frame of the clip, in sending order, cut into RTP payloads (once per process)."""
    clip, _origin, events = load_clip(path)
    frames = []
    for capture, kind, index, packet in events:
        payloads = tuple(packetize_h264(bytes(packet))) if kind == "video" else (bytes(packet),)
        frames.append(ClipFrame(float(capture), kind, index, round(capture * CLOCK_RATES[kind]), payloads,
                                sum(map(len, payloads))))
    clip.close()
    return frames


class _Silent(MediaStreamTrack):
    """A sender's track that yields nothing: the media goes through the wire, and
    aiortc's sending task waits here without waking up."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        super().__init__()

    async def recv(self):
        await asyncio.Future()


def sending_peer_connection() -> RTCPeerConnection:
    """A peer connection that offers to send Opus and H.264 (the clip's codecs), no STUN."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for kind in ("audio", "video"):
        transceiver = pc.addTransceiver(_Silent(kind), direction="sendonly")
        if kind == "video":
            transceiver.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                             if c.name in ("H264", "rtx")])
    return pc


@dataclass
class _Track:
    ssrc: int
    payload_type: int
    sequence: int  # of the next packet
    ts_base: int  # RTP timestamp of capture time 0
    clock: int
    sender: RTCRtpSender
    packets: int = 0
    octets: int = 0


@dataclass
class Peer:
    spec: PublisherSpec
    url: str
    pc: RTCPeerConnection | None = None
    wire: SrtpWire | None = None
    tracks: dict[str, _Track] = field(default_factory=dict)
    t0_mono: float = 0.0
    t0_wall: float = 0.0
    next_frame: int = 0
    location: str | None = None
    done: bool = False
    manifest: dict = field(default_factory=lambda: {"t0_mono": 0.0, "completed": False, "location": None,
                                                     "error": "", "video": [], "audio": []})

    def report_clock(self, wall: float) -> None:
        """Sender Reports before the first frame: aiortc's RTCP loop sends them from the
        moment the peer is connected, and would say NTP 0 <-> RTP 0 (a receiver that
        believed it would place the stream's media hours away). Say what a sender's
        clock says: now <-> the RTP timestamp of now."""
        for track in self.tracks.values():
            rtp = (track.ts_base + round((wall - self.t0_wall) * track.clock)) & 0xFFFFFFFF
            self.wire.report(track.sender, ntp_from_unix(wall), rtp, 0, 0)

    def send_frame(self, frame: ClipFrame, now: float) -> None:
        track = self.tracks[frame.kind]
        timestamp = (track.ts_base + frame.rtp_offset) & 0xFFFFFFFF
        sequence, last = track.sequence, len(frame.payloads) - 1
        send, pack = self.wire.send, RTP_HEADER.pack
        for i, payload in enumerate(frame.payloads):
            send(pack(0x80, track.payload_type | (0x80 if i == last else 0), sequence, timestamp, track.ssrc)
                 + payload)
            sequence = (sequence + 1) & 0xFFFF
        track.sequence = sequence
        track.packets += len(frame.payloads)
        track.octets += frame.octets
        self.wire.report(track.sender, ntp_from_unix(self.t0_wall + frame.capture_s), timestamp, track.packets,
                         track.octets)
        self.manifest[frame.kind].append([frame.index, frame.capture_s, now])


class Swarm:
    def __init__(self, clip: list[ClipFrame]) -> None:
        self.clip = clip
        self.peers: list[Peer] = []
        self.heap: list[tuple[float, int]] = []  # (due time.monotonic(), peer number)
        self.woken = asyncio.Event()
        self.connecting = asyncio.Semaphore(CONCURRENT_CONNECTS)
        self.adding: set[asyncio.Task] = set()
        self.session: aiohttp.ClientSession | None = None

    def start_peer(self, spec: PublisherSpec, url: str) -> None:
        task = asyncio.get_running_loop().create_task(self.add(spec, url))
        self.adding.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self.adding.discard)

    async def add(self, spec: PublisherSpec, url: str) -> None:
        peer = Peer(spec, url)
        self.peers.append(peer)
        number = len(self.peers) - 1
        try:
            start_wall = spec.start_time if spec.start_time is not None else time.time() + CONNECT_S
            async with self.connecting:
                began = time.monotonic()
                await self.connect(peer)
            write_json(live_path(spec), {"location": peer.location, "connect_s": round(time.monotonic() - began, 3)})
        except Exception as error:  # noqa: BLE001 - reported in the peer's manifest
            peer.manifest["error"] = repr(error)[:1000]
            self.finish(peer)
            return
        peer.t0_wall = start_wall
        peer.t0_mono = peer.manifest["t0_mono"] = time.monotonic() + (start_wall - time.time())
        peer.report_clock(time.time())
        heapq.heappush(self.heap, (peer.t0_mono + self.clip[0].capture_s, number))
        self.woken.set()

    async def connect(self, peer: Peer) -> None:
        pc = peer.pc = sending_peer_connection()
        connected = asyncio.Event()
        pc.on("connectionstatechange", lambda: pc.connectionState == "connected" and connected.set())
        await pc.setLocalDescription(await pc.createOffer())
        async with self.session.post(peer.url, data=pc.localDescription.sdp,
                                     headers={"Content-Type": "application/sdp"}) as reply:
            answer = await reply.text()
            if reply.status != 201:
                raise RuntimeError(f"WHIP answered {reply.status}: {answer[:300]}")
            peer.location = peer.manifest["location"] = reply.headers["Location"]
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await asyncio.wait_for(connected.wait(), CONNECTED_TIMEOUT_S)
        peer.wire = SrtpWire(pc)
        rng = random.Random(peer.spec.seed)  # fresh sequence numbers and timestamps, as any sender
        for kind, track in peer.wire.tracks.items():
            peer.tracks[kind] = _Track(track.ssrc, track.payload_type, rng.getrandbits(16), rng.getrandbits(32),
                                       CLOCK_RATES[kind], track.sender)

    async def send_forever(self) -> None:
        clip, heap, peers = self.clip, self.heap, self.peers
        while True:
            if not heap:
                self.woken.clear()
                await self.woken.wait()
                continue
            delay = heap[0][0] - time.monotonic()
            if delay > EARLY_S:
                self.woken.clear()
                try:
                    await asyncio.wait_for(self.woken.wait(), delay)
                except TimeoutError:
                    pass
                continue
            now = time.monotonic()
            while heap and heap[0][0] <= now + EARLY_S:
                _due, number = heapq.heappop(heap)
                peer = peers[number]
                try:
                    peer.send_frame(clip[peer.next_frame], now)
                except Exception as error:  # noqa: BLE001 - this peer stops; the others go on
                    peer.manifest["error"] = f"{error!r} at frame {peer.next_frame}"[:1000]
                    self.finish(peer)
                    continue
                peer.next_frame += 1
                if peer.next_frame < len(clip):
                    heapq.heappush(heap, (peer.t0_mono + clip[peer.next_frame].capture_s, number))
                else:
                    peer.manifest["completed"] = True
                    self.finish(peer)

    @staticmethod
    def finish(peer: Peer) -> None:
        if not peer.done:
            peer.done = True
            write_json(peer.spec.manifest_path, peer.manifest)

    async def close(self) -> None:
        for peer in self.peers:
            self.finish(peer)
        await asyncio.gather(*(p.pc.close() for p in self.peers if p.pc is not None), return_exceptions=True)
        if self.session is not None:
            await self.session.close()


# -- the harness's side ------------------------------------------------------------------


def start(clip: Path, preexec_fn=None) -> subprocess.Popen:
    """The swarm process; `add_peer` gives it its peers."""
    return subprocess.Popen([sys.executable, "-m", "benchmarks.whip_swarm", str(clip)], cwd=str(REPO_ROOT),
                            env=child_env(), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            preexec_fn=preexec_fn)


def add_peer(process: subprocess.Popen, spec: PublisherSpec, url: str) -> None:
    for stale in (spec.manifest_path, live_path(spec)):
        Path(stale).unlink(missing_ok=True)
    process.stdin.write(json.dumps({"spec": spec.to_json(), "url": url}) + "\n")
    process.stdin.flush()


# -- the publisher process -----------------------------------------------------------------


def _read_requests(loop: asyncio.AbstractEventLoop, swarm: Swarm) -> None:
    """stdin, one JSON line per peer (a thread: stdin is a pipe from the harness)."""
    for line in sys.stdin:
        if line.strip():
            request = json.loads(line)
            spec = PublisherSpec.from_json(request["spec"])
            loop.call_soon_threadsafe(swarm.start_peer, spec, request["url"])


async def run(clip_path: Path) -> None:
    loopback_only()
    swarm = Swarm(rtp_clip(clip_path))
    swarm.session = aiohttp.ClientSession()
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    loop.add_signal_handler(signal.SIGINT, stopped.set)
    threading.Thread(target=_read_requests, args=(loop, swarm), daemon=True).start()
    sender = loop.create_task(swarm.send_forever())
    await stopped.wait()
    sender.cancel()
    await swarm.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    asyncio.run(run(Path(args[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
