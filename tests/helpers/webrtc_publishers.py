"""WebRTC publishers for tests, each in its own process, and a minimal WHIP endpoint.

Publishers (run ``python -m tests.helpers.webrtc_publishers {aiortc|ffmpeg} SPEC_JSON``,
or use ``start_publisher``): both POST an SDP offer to a WHIP URL, publish
``tests.helpers.media.make_test_media`` pictures and sound decoded to raw frames, and
write a JSON manifest of exactly what they sent (``read_manifest``).

``aiortc``
    An aiortc ``RTCPeerConnection`` (``iceServers=[]``, host candidates limited to
    127.0.0.1) that encodes the raw frames itself (libx264 constrained baseline, libopus)
    and offers aiortc's default codecs, VP8 first (as browsers do); with
    ``video_codec="vp8"`` it offers VP8 only (libvpx). The sender's encoders are wrapped
    in this process to record every H.264 access unit (as NAL units), every whole VP8
    frame and every Opus packet handed to the packetizer. Options: drop chosen video packets
    (and every retransmission of them, RTX or not) on the way out, count the PLI / FIR /
    NACK it receives, keep publishing until killed (``vanish``), send audio late with
    Sender Reports that still pair RTP and capture time correctly (``audio_delay_s``).
``ffmpeg``
    FFmpeg's own WebRTC stack through PyAV's ``whip`` muxer: libx264 High profile with
    no B-frames (the muxer refuses B-frames) and libopus stereo; records every encoded
    packet it muxes.

``WhipEndpoint`` is the test's side of WHIP (RFC 9725): ``POST /whip/<name>`` with
``application/sdp`` calls ``on_offer(sdp)`` and answers ``201 Created`` with a
``Location`` and the SDP answer; ``DELETE <Location>`` calls ``on_delete``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


# -- WHIP endpoint (test side) ------------------------------------------------------


class WhipEndpoint:
    def __init__(self, on_offer: Callable[[str], Awaitable[str]], on_delete: Callable[[], None] | None = None):
        self._on_offer = on_offer
        self._on_delete = on_delete
        self._runner = None
        self.url = ""
        self.offers: list[str] = []
        self.deletes = 0
        self.errors: list[str] = []

    async def start(self, name: str = "test") -> str:
        from aiohttp import web

        app = web.Application()
        app.router.add_post("/whip/{name}", self._post)
        app.router.add_delete("/whip/{name}/resource", self._delete)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/whip/{name}"
        return self.url

    async def _post(self, request):
        from aiohttp import web

        offer = await request.text()
        self.offers.append(offer)
        try:
            answer = await self._on_offer(offer)
        except ValueError as error:
            self.errors.append(str(error))
            return web.Response(status=406, text=str(error))
        return web.Response(status=201, text=answer, content_type="application/sdp",
                            headers={"Location": f"{request.path}/resource"})

    async def _delete(self, request):
        from aiohttp import web

        self.deletes += 1
        if self._on_delete is not None:
            self._on_delete()
        return web.Response(status=200)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


# -- specs and manifests ------------------------------------------------------------


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

    def video_annexb(self) -> list[bytes]:
        return [b"".join(b"\x00\x00\x00\x01" + base64.b64decode(n) for n in au) for au in self.video_aus]

    def audio(self) -> list[bytes]:
        return [base64.b64decode(p) for p in self.audio_packets]

    def vp8(self) -> list[bytes]:
        return [base64.b64decode(f) for f in self.vp8_frames]


def read_manifest(path: str | os.PathLike) -> Manifest:
    return Manifest(**json.loads(Path(path).read_text()))


def _write_manifest(manifest: Manifest, path: str) -> None:
    tmp = f"{path}.tmp"
    Path(tmp).write_text(json.dumps(asdict(manifest)))
    os.replace(tmp, path)


async def start_publisher(kind: str, spec: PublisherSpec) -> asyncio.subprocess.Process:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.helpers.webrtc_publishers", kind, json.dumps(asdict(spec)),
        cwd=str(REPO_ROOT), env=env)


# -- raw media ------------------------------------------------------------------------


def _raw_media(seconds: float):
    """Decoded test pictures (yuv420p VideoFrames) and PCM of make_test_media."""
    import av

    from tests.helpers.media import make_test_media

    media = make_test_media(duration_s=max(1.0, seconds))
    decoder = av.CodecContext.create("h264", "r")
    pictures = []
    for au in media.video:
        pictures.extend(decoder.decode(av.Packet(au.data)))
    pictures.extend(decoder.decode(None))
    return media, pictures


def _pcm_s16(pcm, channels: int):
    import numpy as np

    samples = (np.clip(pcm, -1.0, 1.0) * 32767).astype(np.int16)
    return np.repeat(samples[:, None], channels, axis=1) if channels > 1 else samples[:, None]


# -- aiortc publisher -------------------------------------------------------------------


def _report_capture_time(sender, delay_s: float) -> None:
    """Make an aiortc sender whose media leaves `delay_s` after capture send correct
    Sender Reports: aiortc pairs each packet's RTP timestamp with the NTP time it was
    sent (`RTCRtpSender.__ntp_timestamp`); this one pairs it with the capture time.
    The instance's class becomes a subclass whose property intercepts that
    (name-mangled) attribute."""
    from aiortc import RTCRtpSender

    if "_RTCRtpSender__ntp_timestamp" not in vars(sender):
        raise RuntimeError("aiortc's RTCRtpSender no longer keeps __ntp_timestamp: update this helper")
    delay_ntp = round(delay_s * (1 << 32))

    class CaptureTimeSender(RTCRtpSender):
        @property
        def _RTCRtpSender__ntp_timestamp(self) -> int:
            return self.__dict__.get("capture_ntp", 0)

        @_RTCRtpSender__ntp_timestamp.setter
        def _RTCRtpSender__ntp_timestamp(self, sent_ntp: int) -> None:
            self.__dict__["capture_ntp"] = sent_ntp - delay_ntp if sent_ntp else 0

    sender.__class__ = CaptureTimeSender


def _run_aiortc(spec: PublisherSpec) -> None:
    asyncio.run(_aiortc_main(spec))


async def _aiortc_main(spec: PublisherSpec) -> None:
    import aioice.ice
    import aiohttp
    import aiortc.rtcrtpsender
    import av
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc import RTCRtpSender
    from aiortc.codecs.h264 import H264Encoder
    from aiortc.codecs.vpx import Vp8Encoder
    from aiortc.mediastreams import MediaStreamTrack
    from aiortc.rtp import RTCP_PSFB_FIR, RTCP_PSFB_PLI, RTCP_RTPFB_NACK, RtcpPsfbPacket, RtcpRtpfbPacket, is_rtcp
    from aiortc.sdp import SessionDescription

    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: ["127.0.0.1"]
    manifest = Manifest()
    media, pictures = _raw_media(spec.video_frames / 30)
    original_get_encoder = aiortc.rtcrtpsender.get_encoder

    def capturing_get_encoder(codec):
        encoder = original_get_encoder(codec)
        if isinstance(encoder, H264Encoder):
            inner = encoder._encode_frame

            def encode_frame(frame, force_keyframe):
                nals = list(inner(frame, force_keyframe))
                if nals:
                    manifest.video_aus.append([base64.b64encode(n).decode() for n in nals])
                return iter(nals)

            encoder._encode_frame = encode_frame
        elif isinstance(encoder, Vp8Encoder):
            packetize = encoder._packetize  # gets each whole frame libvpx produced

            def packetize_frame(buffer, picture_id):
                if buffer:
                    manifest.vp8_frames.append(base64.b64encode(buffer).decode())
                return packetize(buffer, picture_id)

            encoder._packetize = packetize_frame
        else:
            inner_encode = encoder.encode

            def encode(frame, force_keyframe=False):
                payloads, timestamp = inner_encode(frame, force_keyframe)
                manifest.audio_packets.extend(base64.b64encode(p).decode() for p in payloads)
                return payloads, timestamp

            encoder.encode = encode
        return encoder

    aiortc.rtcrtpsender.get_encoder = capturing_get_encoder
    clock = {"start": None}
    done = {"video": asyncio.Event(), "audio": asyncio.Event()}
    lags: dict[str, list[float]] = {"video": [], "audio": []}

    async def pace(kind: str, capture_s: float, delay_s: float = 0.0) -> None:
        """Until the frame captured at `capture_s` is due to leave (`delay_s` late)."""
        if clock["start"] is None:
            clock["start"] = time.monotonic()
        await asyncio.sleep(max(0.0, clock["start"] + capture_s + delay_s - time.monotonic()))
        lags[kind].append(time.monotonic() - clock["start"] - capture_s)

    class VideoSource(MediaStreamTrack):
        kind = "video"

        def __init__(self):
            super().__init__()
            self.index = 0

        async def recv(self):
            if self.index >= spec.video_frames and not spec.vanish:
                done["video"].set()
                await asyncio.Future()
            if self.index == spec.video_frames:
                done["video"].set()
            await pace("video", self.index / 30)
            picture = pictures[self.index % len(pictures)]
            frame = av.VideoFrame.from_ndarray(picture.to_ndarray(), format="yuv420p")
            frame.pts = self.index * 3000
            frame.time_base = Fraction(1, 90000)
            self.index += 1
            return frame

    pcm = _pcm_s16(media.pcm, 1)
    audio_frames = spec.video_frames * 48000 // 30 // 960

    class AudioSource(MediaStreamTrack):
        kind = "audio"

        def __init__(self):
            super().__init__()
            self.index = 0

        async def recv(self):
            if self.index >= audio_frames and not spec.vanish:
                done["audio"].set()
                await asyncio.Future()
            if self.index == audio_frames:
                done["audio"].set()
            await pace("audio", self.index * 0.02, spec.audio_delay_s)
            start = (self.index * 960) % max(960, len(pcm) - 960)
            frame = av.AudioFrame.from_ndarray(pcm[start:start + 960].reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = 48000
            frame.pts = self.index * 960
            frame.time_base = Fraction(1, 48000)
            self.index += 1
            return frame

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    if spec.audio:
        audio_sender = pc.addTransceiver(AudioSource(), direction="sendonly").sender
        if spec.audio_delay_s:
            _report_capture_time(audio_sender, spec.audio_delay_s)
    else:
        done["audio"].set()
    if spec.video:
        transceiver = pc.addTransceiver(VideoSource(), direction="sendonly")
        if spec.video_codec == "vp8":
            transceiver.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                             if c.name in ("VP8", "rtx")])
    else:
        done["video"].set()
    await pc.setLocalDescription(await pc.createOffer())
    manifest.offer = pc.localDescription.sdp
    async with aiohttp.ClientSession() as session:
        async with session.post(spec.url, data=manifest.offer, headers={"Content-Type": "application/sdp"}) as reply:
            body = await reply.text()
            if reply.status != 201:
                manifest.error = f"{reply.status}: {body}"
                _write_manifest(manifest, spec.manifest)
                await pc.close()
                return
    manifest.answer = body

    def on_feedback(packet) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_PLI:
            manifest.pli_received += 1
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_FIR:
            manifest.fir_received += 1
        elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            manifest.nack_received += 1

    for transceiver in pc.getTransceivers():
        handle = transceiver.sender._handle_rtcp_packet

        async def counting(packet, handle=handle):
            on_feedback(packet)
            await handle(packet)

        transceiver.sender._handle_rtcp_packet = counting
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))

    if spec.drop_video_packets:
        video = next(m for m in SessionDescription.parse(body).media if m.kind == "video")
        video_pt = next(c.payloadType for c in video.rtp.codecs if c.name.lower() != "rtx")
        rtx_pts = {c.payloadType for c in video.rtp.codecs if c.name.lower() == "rtx"}
        wanted = set(spec.drop_video_packets)
        dropped: set[int] = set()
        transport = next(t.sender.transport for t in pc.getTransceivers() if t.kind == "video")
        send_rtp = transport._send_rtp

        async def lossy_send(data: bytes) -> None:
            if not is_rtcp(data):
                payload_type = data[1] & 0x7F
                seq = int.from_bytes(data[2:4], "big")
                if payload_type == video_pt:
                    if seq in dropped:  # a retransmission without RTX
                        manifest.dropped_packets += 1
                        return
                    index = manifest.video_packets_sent
                    manifest.video_packets_sent += 1
                    if index in wanted:
                        dropped.add(seq)
                        manifest.dropped_sequence_numbers.append(seq)
                        manifest.dropped_packets += 1
                        return
                elif payload_type in rtx_pts:
                    header = 12 + 4 * (data[0] & 0x0F)
                    if data[0] & 0x10:  # header extension
                        header += 4 + 4 * int.from_bytes(data[header + 2:header + 4], "big")
                    if int.from_bytes(data[header:header + 2], "big") in dropped:
                        manifest.dropped_packets += 1
                        return
            await send_rtp(data)

        transport._send_rtp = lossy_send

    await done["video"].wait()
    await done["audio"].wait()
    await asyncio.sleep(spec.linger_s)
    manifest.send_lag_s = {kind: sorted(values)[len(values) // 2] for kind, values in lags.items() if values}
    _write_manifest(manifest, spec.manifest)
    if spec.vanish:
        await asyncio.Future()  # until SIGKILL
    await pc.close()


# -- FFmpeg (PyAV whip) publisher ---------------------------------------------------------


def _run_ffmpeg(spec: PublisherSpec) -> None:
    import av

    manifest = Manifest()
    media, pictures = _raw_media(spec.video_frames / 30)
    try:
        container = av.open(spec.url, "w", format="whip", options={"handshake_timeout": "5000"})
    except av.FFmpegError as error:
        manifest.error = str(error)
        _write_manifest(manifest, spec.manifest)
        return
    video = audio = None
    if spec.video:
        video = container.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = media.width, media.height, "yuv420p"
        video.codec_context.options = {"profile": "high", "preset": "veryfast", "tune": "zerolatency",
                                       "x264-params": "bframes=0:keyint=30:min-keyint=30:scenecut=0"}
    if spec.audio:
        audio = container.add_stream("libopus", rate=48000, layout="stereo")
        audio.codec_context.options = {"frame_duration": "20"}
    pcm = _pcm_s16(media.pcm, 2)
    audio_frames = spec.video_frames * 48000 // 30 // 960
    events = sorted([(i / 30, "v", i) for i in range(spec.video_frames if video else 0)]
                    + [(k * 0.02, "a", k) for k in range(audio_frames if audio else 0)])
    start = time.monotonic()

    def mux(packets, kind: str) -> None:
        for packet in packets:
            if kind == "v":
                from tests.helpers.media import split_annexb

                manifest.video_aus.append([base64.b64encode(n).decode() for n in split_annexb(bytes(packet))])
            else:
                manifest.audio_packets.append(base64.b64encode(bytes(packet)).decode())
            container.mux(packet)

    try:
        for t, kind, index in events:
            time.sleep(max(0.0, start + t - time.monotonic()))
            if kind == "v":
                frame = av.VideoFrame.from_ndarray(pictures[index % len(pictures)].to_ndarray(), format="yuv420p")
                frame.pts = index
                frame.time_base = Fraction(1, 30)
                mux(video.encode(frame), "v")
            else:
                chunk = pcm[(index * 960) % max(960, len(pcm) - 960):][:960]
                frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="stereo")
                frame.sample_rate = 48000
                frame.pts = index * 960
                frame.time_base = Fraction(1, 48000)
                mux(audio.encode(frame), "a")
        if video is not None:
            mux(video.encode(None), "v")
        if audio is not None:
            mux(audio.encode(None), "a")
        time.sleep(spec.linger_s)
    except av.FFmpegError as error:
        manifest.error = str(error)
    _write_manifest(manifest, spec.manifest)
    container.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    kind, raw = argv
    values = json.loads(raw)
    values["drop_video_packets"] = tuple(values.get("drop_video_packets", ()))
    spec = PublisherSpec(**values)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    {"aiortc": _run_aiortc, "ffmpeg": _run_ffmpeg}[kind](spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
