"""A WHIP publisher that sends H.264 with B-frames, which no publisher the node serves
makes (FFmpeg's WHIP muxer refuses them, OBS and browsers do not encode them): to see
what the node does with one.

``python -m tests.helpers.bframe_publisher URL FRAMES`` encodes FRAMES pictures with
libx264 (Main profile, 2 B-frames), sends the packets in decode order at 30 fps through
aiortc (so their RTP timestamps, the presentation times, go back at each B-frame), and
prints JSON lines on stdout: ``{"location": ..., "status": ...}`` after the POST, then
``{"pts": [...]}`` (each frame's presentation time, in the order sent) once every frame
is out. It stays connected until killed."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from fractions import Fraction

import aiohttp
import aioice.ice
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

FPS = 30
SIZE = (320, 240)


def encode_with_b_frames(frames: int) -> list[av.Packet]:
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = *SIZE, "yuv420p"
    codec.time_base = Fraction(1, FPS)
    codec.framerate = Fraction(FPS, 1)
    codec.options = {"profile": "main", "preset": "veryfast",
                     "x264-params": "bframes=2:b-adapt=0:keyint=30:min-keyint=30:scenecut=0:repeat-headers=1"}
    packets = []
    for index in range(frames):
        picture = np.zeros((SIZE[1] * 3 // 2, SIZE[0]), np.uint8)
        picture[: SIZE[1]] = 40
        picture[40:120, (index * 4) % 240:(index * 4) % 240 + 80] = 200  # a moving square
        frame = av.VideoFrame.from_ndarray(picture, format="yuv420p")
        frame.pts = index
        packets += codec.encode(frame)
    packets += codec.encode(None)
    return packets


class PacketTrack(MediaStreamTrack):
    """Encoded packets, paced at the frame rate in decode order; then silent."""

    kind = "video"

    def __init__(self, packets: list[av.Packet]):
        super().__init__()
        self.packets = packets
        self.sent = 0
        self.done = asyncio.Event()
        self._start: float | None = None

    async def recv(self) -> av.Packet:
        if self.sent >= len(self.packets):
            self.done.set()
            await asyncio.Future()
        self._start = self._start or time.monotonic()
        await asyncio.sleep(max(0.0, self._start + self.sent / FPS - time.monotonic()))
        packet = self.packets[self.sent]
        packet.time_base = Fraction(1, FPS)
        self.sent += 1
        return packet


async def publish(url: str, frames: int) -> None:
    track = PacketTrack(encode_with_b_frames(frames))
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    transceiver = pc.addTransceiver(track, direction="sendonly")
    transceiver.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                     if c.name in ("H264", "rtx")])
    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=pc.localDescription.sdp,
                                headers={"Content-Type": "application/sdp"}) as reply:
            answer = await reply.text()
            print(json.dumps({"status": reply.status, "location": reply.headers.get("Location", "")}), flush=True)
    if reply.status != 201:
        return
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await track.done.wait()
    print(json.dumps({"pts": [packet.pts for packet in track.packets]}), flush=True)
    await asyncio.Future()  # until killed


if __name__ == "__main__":
    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: ["127.0.0.1"]
    asyncio.run(publish(sys.argv[1], int(sys.argv[2])))
