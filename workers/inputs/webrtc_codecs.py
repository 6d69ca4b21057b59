"""What to take from a WebRTC (WHIP) offer: one H.264 or VP8 video and / or one Opus audio track.

`plan_offer` reads the offer before any peer connection exists and decides, per
m-section, which codec we answer with, or raises `UnsupportedOffer` naming what we
cannot take: a track is never silently left out of the recording.

Video: the first H.264 payload format in the offer's order (the publisher's own
preference among its H.264 variants) with packetization-mode=1 and a profile we
accept (Constrained Baseline, Baseline, Main, High, Constrained High; nothing is
decoded, so the profile only has to be one aiortc can match, see
`aiortc_patches.EXTRA_H264_PROFILE_LEVEL_IDS`). H.264 wins over any other codec
whatever the order: browsers list VP8 first, and H.264 goes into every container
asked for. Only an offer without an acceptable H.264 gets VP8 (90000 Hz; recorded into
WebM, see `workers.recording`). The answer carries exactly that one payload format
(plus its RTX), so the publisher cannot switch codecs later.
Audio: Opus.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import RTCRtpReceiver
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters
from aiortc.sdp import H264Profile, SessionDescription, parse_h264_profile_level_id

from contract.codes import MediaKind, OfferRefusal
from contract.worker import TrackSpec

ACCEPTED_H264_PROFILES = frozenset({
    H264Profile.PROFILE_CONSTRAINED_BASELINE,
    H264Profile.PROFILE_BASELINE,
    H264Profile.PROFILE_MAIN,
    H264Profile.PROFILE_HIGH,
    H264Profile.PROFILE_CONSTRAINED_HIGH,
})
DEFAULT_PROFILE_LEVEL_ID = "42e01f"  # what aiortc assumes when profile-level-id is absent (WebRTC practice)
SENDING_DIRECTIONS = frozenset({"sendonly", "sendrecv"})
NOT_MEDIA = ("rtx", "red", "ulpfec", "flexfec-03")  # payload formats that carry no codec of their own


class OfferError(ValueError):
    """The offer cannot be answered; the message says why (safe to show the publisher)."""

    refusal = OfferRefusal.FAILED


class InvalidOffer(OfferError):
    """The offer is not a usable SDP offer."""

    refusal = OfferRefusal.INVALID


class UnsupportedOffer(OfferError):
    """The offer is valid SDP but carries something we cannot record."""

    refusal = OfferRefusal.UNSUPPORTED


@dataclass(frozen=True)
class SectionPlan:
    """How to answer one m-section of the offer."""

    index: int
    kind: MediaKind
    codec: RTCRtpCodecParameters  # as offered (payload type, fmtp, feedback)
    preferences: tuple[RTCRtpCodecCapability, ...]  # for RTCRtpTransceiver.setCodecPreferences
    track: TrackSpec

    @property
    def keyframe_request(self) -> str:
        """'fir' when the publisher offered FIR but not PLI, else 'pli' (also when it offered neither)."""
        feedback = {(f.type, f.parameter) for f in self.codec.rtcpFeedback}
        if ("nack", "pli") not in feedback and ("ccm", "fir") in feedback:
            return "fir"
        return "pli"


def _describe(codec: RTCRtpCodecParameters) -> str:
    if codec.name.upper() == "H264":
        return (f"H264(profile-level-id={codec.parameters.get('profile-level-id', '?')}, "
                f"packetization-mode={codec.parameters.get('packetization-mode', 0)})")
    return codec.name


def h264_profile(codec: RTCRtpCodecParameters) -> H264Profile | None:
    try:
        return parse_h264_profile_level_id(str(codec.parameters.get("profile-level-id", DEFAULT_PROFILE_LEVEL_ID)))[0]
    except ValueError:
        return None


def _packetization_mode(codec: RTCRtpCodecParameters) -> int:
    try:
        return int(codec.parameters.get("packetization-mode", 0))
    except (TypeError, ValueError):
        return -1


def _fmtp(codec: RTCRtpCodecParameters) -> tuple[tuple[str, str], ...]:
    return tuple((key, "" if value is None else str(value)) for key, value in codec.parameters.items())


def _capability(kind: str, match) -> RTCRtpCodecCapability | None:
    return next((c for c in RTCRtpReceiver.getCapabilities(kind).codecs if match(c)), None)


def _plan_video(index: int, codecs: list[RTCRtpCodecParameters]) -> SectionPlan:
    media = [c for c in codecs if c.name.lower() not in NOT_MEDIA]
    chosen = next((c for c in media if c.name.upper() == "H264" and _packetization_mode(c) == 1
                   and h264_profile(c) in ACCEPTED_H264_PROFILES and c.clockRate == 90000), None)
    if chosen is not None:
        profile = h264_profile(chosen)
        capability = _capability("video", lambda c: c.name.upper() == "H264" and _packetization_mode(c) == 1
                                 and h264_profile(c) == profile)
        if capability is None:  # aiortc_patches.install() registers every accepted profile
            raise UnsupportedOffer(f"H264 profile of {_describe(chosen)} is not registered with aiortc")
    else:
        chosen = next((c for c in media if c.name.upper() == "VP8" and c.clockRate == 90000), None)
        capability = _capability("video", lambda c: c.name.upper() == "VP8")
        if chosen is None or capability is None:
            offered = ", ".join(_describe(c) for c in media) or "none"
            raise UnsupportedOffer(f"no recordable video codec: need H264 packetization-mode=1 (Constrained "
                                   f"Baseline, Baseline, Main or High profile) or VP8; offered: {offered}")
    rtx = _capability("video", lambda c: c.name.lower() == "rtx")
    preferences = (capability,) + ((rtx,) if rtx is not None else ())
    track = TrackSpec(MediaKind.VIDEO, capability.name, chosen.payloadType, 90000, 1, _fmtp(chosen))
    return SectionPlan(index, MediaKind.VIDEO, chosen, preferences, track)


def _plan_audio(index: int, codecs: list[RTCRtpCodecParameters]) -> SectionPlan:
    chosen = next((c for c in codecs if c.name.lower() == "opus" and c.clockRate == 48000), None)
    if chosen is None:
        offered = ", ".join(_describe(c) for c in codecs) or "none"
        raise UnsupportedOffer(f"no recordable audio codec: need opus/48000; offered: {offered}")
    capability = _capability("audio", lambda c: c.name.lower() == "opus")
    assert capability is not None
    track = TrackSpec(MediaKind.AUDIO, "opus", chosen.payloadType, 48000, chosen.channels or 2, _fmtp(chosen))
    return SectionPlan(index, MediaKind.AUDIO, chosen, (capability,), track)


def plan_offer(sdp: str) -> list[SectionPlan]:
    """One plan per m-section, in offer order; raises InvalidOffer / UnsupportedOffer."""
    try:
        description = SessionDescription.parse(sdp)
    except Exception as error:  # aiortc's parser raises assorted errors on bad input
        raise InvalidOffer(f"cannot parse the SDP offer: {error}") from error
    if not description.media:
        raise UnsupportedOffer("the offer has no media section")
    plans: list[SectionPlan] = []
    seen: set[MediaKind] = set()
    for index, media in enumerate(description.media):
        if media.kind not in ("audio", "video"):
            raise UnsupportedOffer(f"m-section {index} is {media.kind!r}: only audio and video are recorded "
                                   f"(no data channels)")
        kind = MediaKind(media.kind)
        if kind in seen:
            raise UnsupportedOffer(f"more than one {kind.value} track offered: a stream records one audio and "
                                   f"one video track")
        seen.add(kind)
        direction = media.direction or "sendrecv"
        if direction not in SENDING_DIRECTIONS:
            raise UnsupportedOffer(f"the {kind.value} track is {direction}: a publisher must send it")
        if media.dtls is None or media.ice is None:
            raise InvalidOffer(f"the {kind.value} section lacks ICE or DTLS parameters")
        plan = (_plan_video if kind is MediaKind.VIDEO else _plan_audio)(index, media.rtp.codecs)
        plans.append(plan)
    return plans


# -- the other way round: our offer to a WHEP server, and its answer ---------------------


def offer_preferences(kind: MediaKind) -> list[RTCRtpCodecCapability]:
    """What a WHEP offer lists, in order of preference: every recordable H.264 (then VP8)
    for video, Opus for audio, with RTX (for `RTCRtpTransceiver.setCodecPreferences`)."""
    capabilities = RTCRtpReceiver.getCapabilities(kind.value).codecs
    if kind is MediaKind.AUDIO:
        return [c for c in capabilities if c.name.lower() == "opus"]
    h264 = [c for c in capabilities if c.name.upper() == "H264" and _packetization_mode(c) == 1
            and h264_profile(c) in ACCEPTED_H264_PROFILES]
    return h264 + [c for c in capabilities if c.name.upper() == "VP8"] + \
        [c for c in capabilities if c.name.lower() == "rtx"]


def plan_answer(index: int, kind: MediaKind, negotiated: list[RTCRtpCodecParameters],
                answered: list[RTCRtpCodecParameters]) -> SectionPlan:
    """How to receive one section of a WHEP server's answer. `negotiated`: the codecs
    aiortc matched with our offer, in the answer's order; `answered`: the section's codecs as
    the server wrote them (their fmtp, e.g. sprop-parameter-sets, is the stream's). A
    sender sends the first codec of the answer, so that one is recorded."""
    media = [c for c in negotiated if c.name.lower() not in NOT_MEDIA]
    if not media:
        offered = ", ".join(_describe(c) for c in answered if c.name.lower() not in NOT_MEDIA) or "none"
        raise UnsupportedOffer(f"the answer's {kind.value} section has no codec we offered; answered: {offered}")
    chosen = media[0]
    written = next((c for c in answered if c.payloadType == chosen.payloadType), chosen)
    fmtp = _fmtp(written)
    if kind is MediaKind.AUDIO:
        track = TrackSpec(MediaKind.AUDIO, "opus", chosen.payloadType, 48000, written.channels or 2, fmtp)
    else:
        track = TrackSpec(MediaKind.VIDEO, chosen.name.upper(), chosen.payloadType, 90000, 1, fmtp)
    return SectionPlan(index, kind, chosen, (), track)
