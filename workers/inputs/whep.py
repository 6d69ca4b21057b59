"""WHEP input: the WebRTC input the other way round. We make the offer (receive-only,
ICE host candidates on the configured addresses, no STUN), the engine sends it to the
WHEP server and brings back its answer, the server sends. From there everything is the
WHIP input's (`workers.inputs.webrtc`): packets tapped before aiortc's jitter buffer,
`TrackPipe`, PLI / FIR, Sender Reports, the peer-gone rules. Nothing is decoded.

The offer lists every recordable H.264 (packetization-mode 1; Constrained Baseline,
Baseline, Main, High, Constrained High) before VP8, and Opus
(`webrtc_codecs.offer_preferences`). A sender sends the first codec of its answer: that
one is recorded (`webrtc_codecs.plan_answer`); packets of any other payload type the
answer lists are counted, never mixed in. A section the server does not send (answered
inactive or rejected) is simply not a track; an answer with none is refused.

Life cycle, driven by the worker: `make_offer()`, then `apply_answer(sdp)` (the tracks;
the receivers are hooked before any packet can arrive), then `wait_connected()` (ICE
and DTLS up, or OSError).
"""

from __future__ import annotations

import asyncio

import structlog
from aiortc import RTCRtpTransceiver, RTCSessionDescription
from aiortc.sdp import SessionDescription

from contract.codes import MediaKind
from contract.worker import TrackSpec
from workers.inputs import aiortc_patches
from workers.inputs.webrtc import InvalidOffer, OfferError, UnsupportedOffer, WebRtcInput
from workers.inputs.webrtc_codecs import offer_preferences, plan_answer

log = structlog.get_logger("whep")

RECEIVING_DIRECTIONS = frozenset({"recvonly", "sendrecv"})  # ours, once the answer is applied


class WhepInput(WebRtcInput):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._transceivers: list[RTCRtpTransceiver] = []

    async def make_offer(self) -> str:
        """Our receive-only offer (audio and video), ICE gathered; OSError when no ICE
        socket could be bound."""
        if self._pc is not None:
            raise RuntimeError("this input already made an offer")
        pc = self._new_peer()
        try:
            for kind in (MediaKind.VIDEO, MediaKind.AUDIO):
                transceiver = pc.addTransceiver(kind.value, direction="recvonly")
                transceiver.setCodecPreferences(offer_preferences(kind))
                self._transceivers.append(transceiver)
            return await self._describe_locally(await pc.createOffer())
        except BaseException:
            self._transceivers = []
            await self._abandon()
            raise

    async def apply_answer(self, sdp: str) -> tuple[TrackSpec, ...]:
        """Take the server's answer: the tracks it will send. Raises `InvalidOffer` for an
        answer that is not SDP or that aiortc refuses, `UnsupportedOffer` when it sends
        nothing we can record. Connecting goes on in the background (`wait_connected`)."""
        if self._pc is None or self._plans:
            raise RuntimeError("no offer waits for an answer")
        try:
            try:
                answered = SessionDescription.parse(sdp).media
            except Exception as error:  # aiortc's parser raises assorted errors on bad input
                raise InvalidOffer(f"cannot parse the SDP answer: {error}") from error
            if not answered:
                raise InvalidOffer("the SDP answer has no media section (is it SDP at all?)")
            try:
                await self._pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
            except Exception as error:
                raise InvalidOffer(f"SDP answer rejected: {error}") from error
            # aiortc starts connecting once this coroutine yields: hook every receiver first.
            plans = []
            for index, transceiver in enumerate(self._transceivers):
                if transceiver.currentDirection not in RECEIVING_DIRECTIONS:
                    continue
                kind = MediaKind(transceiver.kind)
                section = next((m for m in answered if m.rtp.muxId == transceiver.mid), None)
                plan = plan_answer(index, kind, aiortc_patches.negotiated_codecs(transceiver),
                                   section.rtp.codecs if section is not None else [])
                self._tracks.append(self._hook(plan, transceiver))
                plans.append(plan)
            if not plans:
                raise UnsupportedOffer("the answer sends neither audio nor video")
            self._plans = plans
            self._watch(self._transceivers)
        except BaseException:
            await self._abandon()
            raise
        log.info("whep_answer_applied", tracks=[f"{p.track.kind}:{p.track.codec}/{p.track.payload_type}"
                                                for p in plans])
        return self.tracks

    async def wait_connected(self, timeout_s: float) -> None:
        """Until ICE and DTLS are up; OSError when they fail or take longer than `timeout_s`."""
        try:
            await asyncio.wait_for(self._connection_settled.wait(), timeout_s)
        except TimeoutError:
            raise OSError(f"ICE / DTLS did not connect within {timeout_s:g} s") from None
        state = self._pc.connectionState if self._pc is not None else "closed"
        if state != "connected":
            raise OSError(f"the connection {state} before media could flow")


__all__ = ["InvalidOffer", "OfferError", "UnsupportedOffer", "WhepInput"]
