"""WebRTC (WHIP) input: one aiortc peer connection, encoded frames out, nothing decoded.

How frames leave aiortc (aiortc 1.16; every internal used is in
`workers.inputs.aiortc_patches` and checked by tests/workers/test_aiortc_internals.py):
aiortc's `RTCRtpReceiver._handle_rtp_packet` does SRTP (via the DTLS transport),
RTCP receiver statistics, REMB, RTX unwrapping and NACK generation, then hands each
packet to its private `JitterBuffer`. We replace that jitter buffer, per receiver,
with a tap (`_PacketTap`) that passes every packet to the track's
`workers.inputs.track_pipe.TrackPipe` and never returns
a frame, so aiortc's decoder thread stays idle (and `get_decoder` is replaced by a
dropping stand-in, in case). This is the least invasive point: everything before it
(NACK/RTX repair included) keeps working unmodified; everything after it (aiortc's
jitter buffer, which stalls on unrecovered loss, the timestamp mapper, the decoder)
is what a recorder must not use. Taking packets earlier would mean redoing RTX and
NACK; wrapping the decoder would keep aiortc's stalling jitter buffer.

`TrackPipe` is the per-track path the plain-RTP input uses too: SSRC latching, early
Sender Reports, `workers.jitter.JitterBuffer` (a hole waited for at most
`jitter_max_wait_s`, then the broken frame dropped), `workers.tracks.VideoTrack` /
`AudioTrack` (H.264 to Annex-B with SPS/PPS on every key frame, VP8 to the bare frame;
frames dropped after a loss until a clean key frame, one requested), and the key-frame
request policy (at least 0.5 s apart, deferred until the SSRC is known, repeated every
second until a key frame is delivered). Video is H.264, or VP8 when the offer has no
acceptable H.264 (`workers.inputs.webrtc_codecs`). Sender Reports and BYE are taken
from the receiver's RTCP handler. A key-frame request is a PLI, or a FIR when the
publisher offered `ccm fir` without `nack pli`, sent through aiortc's RTCP path.

B-frames (H.264; VP8 has none): RTP carries no decode timestamp, so a stream with B-frames would reach us
in decode order with non-monotonic RTP timestamps, and we could not give the muxer
correct DTS without parsing slice headers and the SPS reorder depth. We do not, because
the publishers this input serves do not send B-frames:
- FFmpeg's whip muxer refuses a video stream with B-frames when it opens
  ("Unsupported B frames by RTC", `par->video_delay > 0`, libavformat/whip.c).
- OBS's WHIP service forces `bf=0` on the encoder (plugins/obs-webrtc
  whip-service.cpp, `ApplyEncoderSettings`); read in the source, not tested here.
- Browsers: libwebrtc encodes H.264 with OpenH264 (Constrained Baseline: no B slices)
  or with hardware encoders set up for real time without frame reordering; headless
  Chromium's frames are recorded exactly (tests/e2e/test_chromium_whip.py).
Frames are emitted in arrival (= decode) order; a video frame whose RTP timestamp is
below the highest one seen is counted (`reordered_timestamps` in stats) and logged
once, so a B-frame publisher would be visible rather than silently mis-timed; a recording
writes only the frames that keep its track's time going forward (checked with a B-frame publisher by
tests/e2e/test_whip.py::test_a_b_frame_publisher_is_visible_and_its_file_never_goes_back_in_time).

The peer is gone (`on_closed(reason)`) when the connection state becomes failed
(ICE failure or consent freshness expiry: aioice checks consent every ~5 s and gives
up after 6 failures, ~30 s; tests shorten `aioice.ice.CONSENT_INTERVAL` /
`CONSENT_FAILURES`) or closed, when the DTLS transport closes (the peer sent
close_notify), or when every track's sender said RTCP BYE. Not called after our own
`close()`.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpTransceiver, RTCSessionDescription

from contract.codes import MediaKind
from contract.worker import TrackSpec
from workers.frames import EncodedFrame
from workers.inputs import aiortc_patches
from workers.inputs.base import FrameHandler, SenderReportHandler, StreamInput
from workers.inputs.track_pipe import KeyframeRequestSender, TrackPipe
from workers.inputs.webrtc_codecs import InvalidOffer, OfferError, SectionPlan, UnsupportedOffer, plan_offer

aiortc_patches.install()

log = structlog.get_logger("webrtc")

__all__ = ["InvalidOffer", "OfferError", "UnsupportedOffer", "WebRtcInput", "WebRtcSettings"]


@dataclass(frozen=True)
class WebRtcSettings:
    host_addresses: tuple[str, ...] = ("127.0.0.1",)  # ICE host candidates offered (no STUN: iceServers=[])
    advertised_address: str | None = None  # replaces the host candidates' address in the answer (NAT, containers)
    port_range: tuple[int, int] | None = None  # inclusive UDP port range ICE may bind
    jitter_max_wait_s: float = 0.25  # bounded wait for NACK/RTX repair before dropping a frame


class _WebRtcTrack:
    """One negotiated track: its `TrackPipe`, fed by aiortc (this is the
    `aiortc_patches.PacketSink` hooked on the receiver), plus what only WebRTC reports:
    NACKs aiortc sent, and video frames whose RTP timestamp goes back (B-frames?)."""

    def __init__(self, plan: SectionPlan, max_wait: float, on_frame: FrameHandler,
                 on_sender_report: SenderReportHandler, send_keyframe_request: KeyframeRequestSender,
                 clock: Callable[[], float] = time.monotonic,
                 defer: Callable[[Callable[[], None]], object] | None = None):
        self.kind = plan.kind
        self._on_frame = on_frame
        self._highest_timestamp: int | None = None
        self.nack = self.nack_sequence_numbers = self.reordered_timestamps = 0
        self.pipe = TrackPipe(plan.track, max_wait, self._in_decode_order if plan.kind is MediaKind.VIDEO
                              else on_frame, on_sender_report, send_keyframe_request, plan.keyframe_request, clock)
        self._clock = clock
        self._payload_type = plan.codec.payloadType
        self.other_payload_types = 0
        # With `defer` (the event loop's call_soon): packets aiortc hands over, one by one, in one
        # event-loop iteration (a tick's datagrams) go to the pipe as one batch in the next
        # (`TrackPipe.push_many`). Without: each at once.
        self._defer = defer
        self._packets: list = []
        self._arrivals: list[float] = []

    def on_rtp(self, packet) -> None:
        """PacketSink: packets of the chosen codec go to the pipe (RTX comes unwrapped, with
        its original payload type). An answer may list more than one codec (WHEP servers'
        answers do); a sender switching to another one is counted, not recorded."""
        if packet.payload_type != self._payload_type:
            self.other_payload_types += 1
            return
        if self._defer is None:
            self.pipe.on_rtp(packet)
            return
        if not self._packets:
            self._defer(self.flush)
        self._packets.append(packet)
        self._arrivals.append(self._clock())

    def flush(self) -> None:
        """Hand the packets taken since the last flush to the pipe, release what is complete."""
        if not self._packets:
            return
        packets, arrivals = self._packets, self._arrivals
        self._packets, self._arrivals = [], []
        try:
            self.pipe.push_many(packets, arrivals)
            self.pipe.tick(arrivals[-1])
        except Exception:  # as aiortc_patches guards the sink: never into the event loop
            log.exception("webrtc_sink_failed", stage="rtp")

    def on_rtcp(self, packet) -> None:
        """PacketSink: RTCP comes after the RTP that arrived before it."""
        self.flush()
        self.pipe.on_rtcp(packet)

    def on_nack(self, lost: list[int]) -> None:
        self.nack += 1
        self.nack_sequence_numbers += len(lost)

    def _in_decode_order(self, frame: EncodedFrame) -> None:
        if self._highest_timestamp is not None and frame.rtp_timestamp < self._highest_timestamp:
            if not self.reordered_timestamps:
                log.warning("webrtc_video_timestamps_go_back", note="B-frames? frames kept in decode order")
            self.reordered_timestamps += 1
        else:
            self._highest_timestamp = frame.rtp_timestamp
        self._on_frame(frame)

    def stats_dict(self) -> dict[str, float]:
        pipe = self.pipe.stats_dict()
        jitter = self.pipe.jitter.stats
        result: dict[str, float] = {
            "packets": jitter.packets,
            "frames": pipe["frames"],
            "lost": jitter.lost_packets,
            "nack": self.nack,
            "pli": pipe["pli"],
            "dropped_frames": jitter.dropped_frames,
            "max_release_delay_s": pipe["max_release_delay_s"],
            "nack_sequence_numbers": self.nack_sequence_numbers,
            "reordered_timestamps": self.reordered_timestamps,
            "other_payload_types": self.other_payload_types,
        }
        result.update({k: v for k, v in pipe.items() if k not in result})
        return result


class WebRtcInput(StreamInput):
    def __init__(self, settings: WebRtcSettings, on_frame: FrameHandler, on_sender_report: SenderReportHandler,
                 on_closed: Callable[[str], None]):
        super().__init__(on_frame, on_sender_report)
        self.settings = settings
        self._on_closed = on_closed
        self._pc: RTCPeerConnection | None = None
        self._plans: list[SectionPlan] = []
        self._tracks: list[_WebRtcTrack] = []
        self._tasks: set[asyncio.Task] = set()
        self._closing: asyncio.Task | None = None
        self._ice_poller = aiortc_patches.IcePoller()
        self._closed_reported = False
        self._local_close = False
        self._fir_sequence = 0
        self._connection_settled = asyncio.Event()  # connected, failed or closed

    async def start(self) -> None:
        """Nothing binds before an offer: ICE sockets are opened by `accept_offer`."""
        low_high = self.settings.port_range
        if low_high is not None and not (0 < low_high[0] <= low_high[1] < 65536):
            raise OSError(f"invalid UDP port range {low_high}")

    async def accept_offer(self, sdp: str) -> str:
        """Answer a publisher's SDP offer; returns the complete answer (ICE gathered).

        Raises `UnsupportedOffer` / `InvalidOffer` (both `OfferError`, a ValueError) when the
        offer cannot be recorded, OSError when no ICE socket could be bound.
        """
        if self._pc is not None:
            raise RuntimeError("this input already accepted an offer")
        plans = plan_offer(sdp)
        pc = self._new_peer()
        try:
            transceivers = []
            for plan in plans:
                transceiver = pc.addTransceiver(plan.kind.value, direction="recvonly")
                transceiver.setCodecPreferences(list(plan.preferences))
                transceivers.append(transceiver)
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            except OfferError:
                raise
            except Exception as error:
                raise InvalidOffer(f"offer rejected: {error}") from error
            for plan, transceiver in zip(plans, transceivers, strict=True):
                self._tracks.append(self._attach(plan, transceiver))
            self._plans = plans
            self._watch(transceivers)
            answer_sdp = await self._describe_locally(await pc.createAnswer())
        except BaseException:
            await self._abandon()
            raise
        log.info("webrtc_offer_accepted", tracks=[f"{p.track.kind}:{p.track.codec}/{p.track.payload_type}"
                                                  for p in plans])
        return answer_sdp

    # what answering an offer and making one (workers.inputs.whep) share
    def _new_peer(self) -> RTCPeerConnection:
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no STUN: host candidates only
        return self._pc

    def _watch(self, transceivers: list[RTCRtpTransceiver]) -> None:
        """Notice the peer going away (connection failed or closed, DTLS closed)."""
        assert self._pc is not None
        self._pc.on("connectionstatechange", self._on_connection_state)
        for transport in {t.receiver.transport for t in transceivers}:
            transport.on("statechange", lambda transport=transport: self._on_dtls_state(transport))

    async def _describe_locally(self, description: RTCSessionDescription) -> str:
        """Set our offer or answer, gathering ICE host candidates on the configured
        addresses (and port range); the complete SDP, with the advertised address."""
        assert self._pc is not None
        token = aiortc_patches.ICE_BINDING.set(
            aiortc_patches.IceBinding(tuple(self.settings.host_addresses), self.settings.port_range))
        try:
            await self._pc.setLocalDescription(description)
        finally:
            aiortc_patches.ICE_BINDING.reset(token)
        sdp = self._pc.localDescription.sdp
        if "a=candidate:" not in sdp:
            raise OSError(f"no ICE candidate could be bound on {self.settings.host_addresses}")
        return _advertise(sdp, self.settings.advertised_address) if self.settings.advertised_address else sdp

    async def _abandon(self) -> None:
        """Undo a negotiation that failed half way: the peer connection is closed, unreported."""
        pc, self._pc = self._pc, None
        self._tracks.clear()
        self._plans = []
        if pc is not None:
            self._local_close = True
            await pc.close()
            self._local_close = False

    def _attach(self, plan: SectionPlan, transceiver: RTCRtpTransceiver) -> _WebRtcTrack:
        negotiated = [c for c in aiortc_patches.negotiated_codecs(transceiver) if c.name.lower() != "rtx"]
        if not negotiated or negotiated[0].payloadType != plan.codec.payloadType:
            raise UnsupportedOffer(f"{plan.kind.value}: aiortc did not negotiate payload type "
                                   f"{plan.codec.payloadType} ({plan.codec.name})")
        if plan.kind is MediaKind.VIDEO and "profile-level-id" in plan.codec.parameters:
            # Answer with the publisher's own profile-level-id: its level is then never lowered.
            negotiated[0].parameters["profile-level-id"] = plan.codec.parameters["profile-level-id"]

        return self._hook(plan, transceiver)

    def _hook(self, plan: SectionPlan, transceiver: RTCRtpTransceiver) -> _WebRtcTrack:
        """The track's pipe takes the receiver's packets (before any can arrive)."""

        def send_request(ssrc: int, method: str, transceiver=transceiver) -> None:
            if method == "fir":
                self._fir_sequence = (self._fir_sequence + 1) & 0xFF
                coroutine = aiortc_patches.send_fir(transceiver, ssrc, self._fir_sequence)
            else:
                coroutine = aiortc_patches.send_pli(transceiver.receiver, ssrc)
            self._spawn(coroutine)

        track = _WebRtcTrack(plan, self.settings.jitter_max_wait_s, self.on_frame, self.on_sender_report,
                             send_request, defer=asyncio.get_running_loop().call_soon)
        aiortc_patches.hook_receiver(transceiver.receiver, track)
        return track

    def _spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # peer gone
    def _report_closed(self, reason: str) -> None:
        if self._closed_reported or self._local_close:
            return
        self._closed_reported = True
        log.info("webrtc_peer_gone", reason=reason)
        self._on_closed(reason)

    def _on_connection_state(self) -> None:
        if self._pc is None:
            return
        if self._pc.connectionState == "connected":
            self._ice_poller.start(self._pc)
            self._connection_settled.set()
        elif self._pc.connectionState in ("failed", "closed"):
            self._connection_settled.set()
            self._ice_poller.close()
            self._report_closed(f"connection {self._pc.connectionState}")

    def _on_dtls_state(self, transport) -> None:
        if transport.state in ("closed", "failed"):
            self._report_closed(f"dtls {transport.state}")

    # StreamInput
    @property
    def tracks(self) -> tuple[TrackSpec, ...]:
        return tuple(plan.track for plan in self._plans)

    def request_keyframe(self) -> None:
        for track in self._tracks:
            track.pipe.request_keyframe()  # audio: no-op

    def tick(self, now: float) -> None:
        """Hand the ICE sockets' datagrams to aiortc (which decrypts and routes them to
        the pipes as soon as this tick's callbacks have run), release what is due."""
        self._ice_poller.drain()
        for track in self._tracks:
            track.flush()
            track.pipe.tick(now)
        if self._tracks and all(track.pipe.ended for track in self._tracks):
            self._report_closed("rtcp bye")

    def next_deadline(self) -> float | None:
        return min((d for t in self._tracks if (d := t.pipe.next_deadline()) is not None), default=None)

    def stats(self) -> dict[str, dict[str, float]]:
        return {track.kind.value: track.stats_dict() for track in self._tracks}

    @property
    def last_packet(self) -> float | None:
        times = [t.pipe.last_packet for t in self._tracks if t.pipe.last_packet is not None]
        return max(times) if times else None

    def close(self) -> None:
        """Close the peer connection (in the background; `aclose()` waits for it)."""
        self._local_close = True
        for track in self._tracks:
            track.flush()
        self._ice_poller.close()
        if self._pc is not None and self._closing is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop left: the process is ending, and the sockets with it
            self._closing = loop.create_task(self._pc.close())

    async def aclose(self) -> None:
        self.close()
        if self._closing is not None:
            await self._closing


_CANDIDATE = re.compile(r"^(a=candidate:\S+ \d+ \S+ \d+ )(\S+)( \d+ typ host.*)$")


def _advertise(sdp: str, address: str) -> str:
    """Replace the address of our host candidates (and the c= lines) with `address`."""
    version = 6 if ":" in address else 4
    lines = []
    for line in sdp.split("\r\n"):
        match = _CANDIDATE.match(line)
        if match:
            line = f"{match.group(1)}{address}{match.group(3)}"
        elif line.startswith("c=IN IP"):
            line = f"c=IN IP{version} {address}"
        lines.append(line)
    return "\r\n".join(lines)
