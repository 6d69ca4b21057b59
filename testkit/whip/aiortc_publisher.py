"""The aiortc publisher: an ``RTCPeerConnection`` (no ICE servers, host candidates on
127.0.0.1 only) that encodes the test pictures itself and records every access unit,
VP8 frame and Opus packet its encoders hand to the packetizers (see ``testkit.whip``)."""

from __future__ import annotations

import asyncio
import base64
import time
import urllib.parse
from fractions import Fraction

import aiohttp
import aioice.ice
import aiortc.rtcrtpsender
import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtp import (
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    is_rtcp,
)
from aiortc.sdp import SessionDescription

from testkit.rtp import ntp_from_unix
from testkit.sender_reports import hostile_reports
from testkit.whip.spec import Manifest, PublisherSpec, pcm_s16, raw_media, write_manifest

FPS = 30
AUDIO_FRAME = 960  # samples at 48 kHz: 20 ms
VIDEO_CLOCK_RATE, AUDIO_CLOCK_RATE = 90000, 48000  # RTP clocks (H.264 and VP8; Opus)
MAX_REDIRECTS = 5  # a node answers 307 to another node of its fleet; more than a few is a loop


def _report_capture_time(sender, pacer: "_Pacer", clock_rate: int) -> None:
    """Make an aiortc sender's Sender Reports pair each RTP timestamp with the time its
    frame was captured on the pacer's clock (shared by both tracks), as browsers do,
    instead of with the time the packet happened to leave: aiortc pairs it with the NTP
    time it was sent (`RTCRtpSender.__ntp_timestamp`), so a publisher slowed by a busy
    machine, or audio sent late on purpose (`audio_delay_s`), would put its own scheduling
    into the lip sync the node is tested for. The instance's class becomes a subclass that
    notes the capture time of each encoded frame (its timestamp is the frame's pts) and
    whose property intercepts that (name-mangled) attribute."""
    if "_RTCRtpSender__ntp_timestamp" not in vars(sender):
        raise RuntimeError("aiortc's RTCRtpSender no longer keeps __ntp_timestamp: update this helper")

    class CaptureTimeSender(RTCRtpSender):
        async def _next_encoded_frame(self, codec):
            encoded = await super()._next_encoded_frame(codec)
            if encoded is not None:
                self.__dict__["frame_capture_ntp"] = ntp_from_unix(pacer.capture_wall(encoded.timestamp / clock_rate))
            return encoded

        @property
        def _RTCRtpSender__ntp_timestamp(self) -> int:
            return self.__dict__.get("capture_ntp", 0)

        @_RTCRtpSender__ntp_timestamp.setter
        def _RTCRtpSender__ntp_timestamp(self, sent_ntp: int) -> None:
            # set as each packet of the frame last encoded leaves, with its RTP timestamp
            self.__dict__["capture_ntp"] = self.__dict__.get("frame_capture_ntp", 0) if sent_ntp else 0

    sender.__class__ = CaptureTimeSender


def _send_hostile_reports(sender: RTCRtpSender) -> None:
    """Each RTCP compound the sender sends is followed by `hostile_reports` of its SR."""
    send_rtcp = sender._send_rtcp

    async def with_hostile(packets) -> None:
        await send_rtcp(packets)
        for packet in packets:
            if isinstance(packet, RtcpSrPacket):
                for hostile in hostile_reports(packet):
                    await send_rtcp([hostile])

    sender._send_rtcp = with_hostile


def _capture_encoders(manifest: Manifest) -> None:
    """Every encoder aiortc makes from now on records what it hands to its packetizer."""
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


class _Pacer:
    """The publisher's clock (capture time 0 = the first frame asked for) and how late
    each frame was handed over."""

    def __init__(self, start_delay_s: float = 0.0) -> None:
        self.start: float | None = None  # time.monotonic() at capture time 0
        self.start_wall = 0.0  # time.time() at the same instant: the Sender Reports' clock
        self.start_delay_s = start_delay_s  # from the first frame asked for to capture time 0
        self.lags: dict[str, list[float]] = {"video": [], "audio": []}

    async def wait(self, kind: str, capture_s: float, delay_s: float = 0.0) -> None:
        """Until the frame captured at `capture_s` is due to leave (`delay_s` late)."""
        if self.start is None:
            self.start = time.monotonic() + self.start_delay_s
            self.start_wall = time.time() + self.start_delay_s
        await asyncio.sleep(max(0.0, self.start + capture_s + delay_s - time.monotonic()))
        self.lags[kind].append(time.monotonic() - self.start - capture_s)

    def capture_wall(self, capture_s: float) -> float:
        return self.start_wall + capture_s

    def median_lags(self) -> dict[str, float]:
        return {kind: sorted(values)[len(values) // 2] for kind, values in self.lags.items() if values}


class _Source(MediaStreamTrack):
    """`count` paced frames (repeating the clip), then `done`; with `vanish`, on until killed."""

    def __init__(self, count: int, vanish: bool, pacer: _Pacer, delay_s: float = 0.0):
        super().__init__()
        self.index, self.count, self.vanish, self.pacer, self.delay_s = 0, count, vanish, pacer, delay_s
        self.done = asyncio.Event()

    async def recv(self):
        if self.index >= self.count and not self.vanish:
            self.done.set()
            await asyncio.Future()
        if self.index == self.count:
            self.done.set()
        await self.pacer.wait(self.kind, self.capture_s(self.index), self.delay_s)
        frame = self.frame(self.index)
        self.index += 1
        return frame


class _VideoSource(_Source):
    kind = "video"

    def __init__(self, pictures: list, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pictures = pictures

    def capture_s(self, index: int) -> float:
        return index / FPS

    def frame(self, index: int) -> av.VideoFrame:
        picture = self.pictures[index % len(self.pictures)]
        frame = av.VideoFrame.from_ndarray(picture.to_ndarray(), format="yuv420p")
        frame.pts = index * VIDEO_CLOCK_RATE // FPS
        frame.time_base = Fraction(1, VIDEO_CLOCK_RATE)
        return frame


class _AudioSource(_Source):
    kind = "audio"

    def __init__(self, pcm, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pcm = pcm

    def capture_s(self, index: int) -> float:
        return index * 0.02

    def frame(self, index: int) -> av.AudioFrame:
        start = (index * AUDIO_FRAME) % max(AUDIO_FRAME, len(self.pcm) - AUDIO_FRAME)
        frame = av.AudioFrame.from_ndarray(self.pcm[start:start + AUDIO_FRAME].reshape(1, -1), format="s16",
                                           layout="mono")
        frame.sample_rate = AUDIO_CLOCK_RATE
        frame.pts = index * AUDIO_FRAME
        frame.time_base = Fraction(1, AUDIO_CLOCK_RATE)
        return frame


def _count_feedback(pc: RTCPeerConnection, manifest: Manifest) -> None:
    """Count the PLI, FIR and NACK each sender receives."""

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


def _drop_video_packets(pc: RTCPeerConnection, answer: str, wanted: set[int], manifest: Manifest) -> None:
    """Lose the `wanted` first transmissions of video packets on the way out, and every
    retransmission of them (RTX or not)."""
    video = next(m for m in SessionDescription.parse(answer).media if m.kind == "video")
    video_pt = next(c.payloadType for c in video.rtp.codecs if c.name.lower() != "rtx")
    rtx_pts = {c.payloadType for c in video.rtp.codecs if c.name.lower() == "rtx"}
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


async def _post_offer(spec: PublisherSpec, manifest: Manifest) -> tuple[int, str]:
    """POST the offer, following 307/308 (RFC 9725 section 4.2) ourselves: aiohttp would
    drop the Authorization header on the way to another host, and the node there wants it."""
    headers = {"Content-Type": "application/sdp",
               **({"Authorization": f"Bearer {spec.token}"} if spec.token else {})}
    url = spec.url
    async with aiohttp.ClientSession() as session:
        for _ in range(MAX_REDIRECTS + 1):
            manifest.posted_to.append(url)
            async with session.post(url, data=manifest.offer, headers=headers, allow_redirects=False) as reply:
                body = await reply.text()
                if reply.status not in (307, 308):
                    return reply.status, body
                url = urllib.parse.urljoin(url, reply.headers["Location"])
    return 508, f"more than {MAX_REDIRECTS} redirects"


def run_aiortc(spec: PublisherSpec) -> None:
    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: ["127.0.0.1"]
    asyncio.run(_publish(spec))


async def _publish(spec: PublisherSpec) -> None:
    manifest = Manifest()
    _capture_encoders(manifest)
    media, pictures = raw_media(spec.video_frames / FPS)
    pacer = _Pacer(spec.media_delay_s)
    sources: list[_Source] = []
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    if spec.audio:
        audio_frames = spec.video_frames * 48000 // FPS // AUDIO_FRAME
        sources.append(_AudioSource(pcm_s16(media.pcm, 1), audio_frames, spec.vanish, pacer, spec.audio_delay_s))
        _report_capture_time(pc.addTransceiver(sources[-1], direction="sendonly").sender, pacer, AUDIO_CLOCK_RATE)
    if spec.video:
        sources.append(_VideoSource(pictures, spec.video_frames, spec.vanish, pacer))
        transceiver = pc.addTransceiver(sources[-1], direction="sendonly")
        _report_capture_time(transceiver.sender, pacer, VIDEO_CLOCK_RATE)
        if spec.video_codec == "vp8":
            transceiver.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                             if c.name in ("VP8", "rtx")])
    await pc.setLocalDescription(await pc.createOffer())
    manifest.offer = pc.localDescription.sdp
    status, body = await _post_offer(spec, manifest)
    if status != 201:
        manifest.error = f"{status}: {body}"
        write_manifest(manifest, spec.manifest)
        await pc.close()
        return
    manifest.answer = body
    _count_feedback(pc, manifest)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    if spec.drop_video_packets:
        _drop_video_packets(pc, body, set(spec.drop_video_packets), manifest)
    if spec.hostile_sender_reports:
        for transceiver in pc.getTransceivers():
            _send_hostile_reports(transceiver.sender)
    for source in sources:
        await source.done.wait()
    await asyncio.sleep(spec.linger_s)
    manifest.send_lag_s = pacer.median_lags()
    write_manifest(manifest, spec.manifest)
    if spec.vanish:
        await asyncio.Future()  # until SIGKILL
    await pc.close()
