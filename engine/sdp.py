"""SDP for plain-RTP publishing: the publisher's offer describes what it will send
(RFC 4566/3264); the answer tells it where the stream's worker listens.

Everything a worker is started with comes from here, so every value the worker
would trip over is refused here with a 400 that names the offending SDP line:
clock rates and channels (H.264 90000 Hz, Opus 48000/2), payload types (0-127, not
64-95, which RTCP's packet types occupy when it shares the RTP port, RFC 5761 4),
`sprop-parameter-sets` (base64 SPS/PPS NAL units), `a=ssrc`, SDES keys (`engine.sdes`).
Last, each track is built as its worker will build it (`workers.inputs.rtp.check_track`).
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field

from contract.codes import MediaKind
from contract.worker import TrackSpec
from engine import sdes
from workers.codecs.h264 import NAL_PPS, nal_type
from workers.codecs.h264_sps import NAL_SPS, parse_sprop_parameter_sets, parse_sps
from workers.inputs.rtp import check_track

SUPPORTED = {(MediaKind.VIDEO, "h264"): "H264", (MediaKind.AUDIO, "opus"): "opus"}
CLOCK = {"H264": (90000, 1), "opus": (48000, 2)}  # rtpmap clock rate and channels (RFC 6184, RFC 7587)
MAX_SDP_BYTES = 16384
PLAIN_RTP_TRANSPORTS = ("RTP/AVP", "RTP/AVPF")
SRTP_TRANSPORTS = ("RTP/SAVP", "RTP/SAVPF")
RTCP_PAYLOAD_TYPES = range(64, 96)  # with the marker bit: RTCP packet types 192-223


class SdpError(ValueError):
    """The offer is malformed or asks for what the node does not record."""


class UnsupportedMedia(SdpError):
    """A well-formed offer of media the node cannot record (a codec, a kind of media)."""


def _bad(reason: str, line: str, kind: type[SdpError] = SdpError) -> SdpError:
    return kind(f"{reason} (line {sdes.shown(line)[:120]!r})")


@dataclass(frozen=True)
class RtpOffer:
    tracks: tuple[TrackSpec, ...]
    rtcp_mux: tuple[bool, ...]
    transports: tuple[str, ...] = ()  # per track, echoed in the answer
    crypto_tags: tuple[int | None, ...] = ()  # per track: the a=crypto tag answered


@dataclass
class _Section:
    line: str  # the m-line
    kind: str
    transport: str
    payload_types: list[int]
    rtpmap: dict[int, tuple[str, int, int, str]] = field(default_factory=dict)  # name, rate, channels, line
    fmtp: dict[int, tuple[str, str]] = field(default_factory=dict)  # parameters, line
    crypto: list[str] = field(default_factory=list, repr=False)  # key material
    ssrcs: list[tuple[str, str]] = field(default_factory=list)  # (a=ssrc id, line)
    fid_groups: list[tuple[str, str]] = field(default_factory=list)  # (first SSRC of a=ssrc-group:FID, line)
    direction: str = "sendrecv"
    rtcp_mux: bool = False


def _parse_fmtp(text: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in text.split(";"):
        item = item.strip()
        if not item:
            continue
        key, _, value = item.partition("=")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def _sections(text: str) -> list[_Section]:
    if len(text.encode()) > MAX_SDP_BYTES:
        raise SdpError("SDP offer too large")
    lines = [line.strip() for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    if not lines or lines[0] != "v=0":
        raise SdpError("not an SDP offer: it must start with v=0")
    sections: list[_Section] = []
    for line in lines[1:]:
        if len(line) < 2 or line[1] != "=":
            raise _bad("malformed SDP line", line)
        key, value = line[0], line[2:]
        if key == "m":
            sections.append(_media_line(line, value))
        elif key == "a" and sections:
            _attribute(sections[-1], value, line)
    if not sections:
        raise SdpError("the offer has no m-line")
    return sections


def _media_line(line: str, value: str) -> _Section:
    parts = value.split()
    if len(parts) < 4:
        raise _bad("malformed m-line", line)
    try:
        pts = [int(p) for p in parts[3:]]
    except ValueError:
        raise _bad("malformed payload types in m-line", line) from None
    if parts[2] not in PLAIN_RTP_TRANSPORTS + SRTP_TRANSPORTS:
        raise _bad(f"unsupported transport {parts[2]!r}: plain RTP (RTP/AVP) or SRTP (RTP/SAVP) expected", line)
    for pt in pts:
        if not 0 <= pt <= 127:
            raise _bad(f"payload type {pt} is outside 0-127", line)
    return _Section(line, parts[0], parts[2], pts)


def _attribute(section: _Section, value: str, line: str) -> None:
    name, _, rest = value.partition(":")
    if name == "rtpmap":
        pt_text, _, encoding = rest.partition(" ")
        parts = encoding.split("/")
        try:
            pt = int(pt_text)
            rate = int(parts[1])
            channels = int(parts[2]) if len(parts) > 2 else 1
        except (ValueError, IndexError):
            raise _bad("malformed rtpmap", line) from None
        if not 0 <= pt <= 127:
            raise _bad(f"payload type {pt} is outside 0-127", line)
        section.rtpmap[pt] = (parts[0], rate, channels, line)
    elif name == "fmtp":
        pt_text, _, params = rest.partition(" ")
        try:
            section.fmtp[int(pt_text)] = (params, line)
        except ValueError:
            raise _bad("malformed fmtp", line) from None
    elif name == "crypto":
        section.crypto.append(line)
    elif name == "ssrc":
        section.ssrcs.append((rest.split(" ", 1)[0], line))
    elif name == "ssrc-group":
        semantics, *members = rest.split()
        if semantics == "FID" and members:
            section.fid_groups.append((members[0], line))
    elif name in ("sendonly", "recvonly", "sendrecv", "inactive"):
        section.direction = name
    elif name == "rtcp-mux":
        section.rtcp_mux = True


def _ssrc(section: _Section) -> int | None:
    """The media SSRC the m-line names: the first of an FID group (the rest is RTX), else
    the first a=ssrc; None when it names none."""
    named = section.fid_groups[:1] or section.ssrcs[:1]
    if not named:
        return None
    text, line = named[0]
    if not (text.isdigit() and int(text) < 2**32):
        raise _bad("an SSRC is a number 0-4294967295", line)
    return int(text)


def _check_sprop(value: str, line: str) -> None:
    try:
        nals = parse_sprop_parameter_sets(value)
    except (ValueError, binascii.Error) as error:
        raise _bad(f"invalid sprop-parameter-sets: {error}", line) from None
    for nal in nals:
        kind = nal_type(nal)
        if kind not in (NAL_SPS, NAL_PPS) or nal[0] & 0x80:
            raise _bad(f"invalid sprop-parameter-sets: a NAL unit of type {kind}, not an SPS or PPS", line)
        if kind == NAL_SPS:
            try:
                parse_sps(nal)
            except (ValueError, IndexError) as error:
                raise _bad(f"invalid sprop-parameter-sets: the SPS does not parse ({error})", line) from None


def _choose_codec(section: _Section, kind: MediaKind) -> tuple[int, str, int, int, str]:
    for pt in section.payload_types:
        name, rate, channels, line = section.rtpmap.get(pt, ("", 0, 0, ""))
        if (kind, name.lower()) not in SUPPORTED:
            continue
        codec = SUPPORTED[(kind, name.lower())]
        want_rate, want_channels = CLOCK[codec]
        if rate != want_rate:
            raise _bad(f"{codec} has a clock rate of {want_rate} Hz, not {rate}", line)
        if channels != want_channels:
            raise _bad(f"{codec} is {codec}/{want_rate}" + (f"/{want_channels}" if want_channels > 1 else ""),
                       line)
        if pt in RTCP_PAYLOAD_TYPES:
            raise _bad(f"payload type {pt} collides with RTCP packet types (RFC 5761 4): use 96-127", line)
        return pt, codec, rate, channels, line
    wanted = "H264" if kind is MediaKind.VIDEO else "opus"
    raise _bad(f"the {kind} m-line offers no {wanted} payload type (rtpmap)", section.line, UnsupportedMedia)


def _srtp(section: _Section, index: int, secret: bytes, require_srtp: bool) -> tuple[sdes.Crypto | None, bytes]:
    """The offer's a=crypto and the node's answer key, or (None, b"") for plain RTP."""
    if section.transport in PLAIN_RTP_TRANSPORTS:
        if require_srtp:
            raise _bad("this node takes only SRTP: RTP/SAVP with an a=crypto line (RFC 4568)", section.line)
        if section.crypto:
            raise _bad(f"a=crypto needs transport RTP/SAVP, not {section.transport}", section.crypto[0])
        return None, b""
    try:
        crypto = sdes.choose_crypto(section.crypto)
    except sdes.CryptoError as error:
        raise SdpError(str(error)) from None
    if crypto is None:
        suites = ", ".join(sdes.PROFILES)
        raise _bad(f"{section.transport} needs an a=crypto line with a supported suite ({suites})", section.line)
    return crypto, sdes.answer_key(secret, crypto, index)


def parse_rtp_offer(text: str, *, answer_key_secret: bytes = b"", require_srtp: bool = False,
                    source_host: str | None = None) -> RtpOffer:
    """`answer_key_secret` keys the derivation of the node's SRTP keys (`engine.sdes`);
    `source_host`, when given, is the only host a track's packets are taken from."""
    tracks: list[TrackSpec] = []
    mux: list[bool] = []
    transports: list[str] = []
    tags: list[int | None] = []
    for index, section in enumerate(_sections(text)):
        if section.kind not in ("audio", "video"):
            raise _bad(f"unsupported media {section.kind!r}: audio and video only", section.line, UnsupportedMedia)
        kind = MediaKind(section.kind)
        if section.direction in ("recvonly", "inactive"):
            raise _bad(f"the {kind} m-line is {section.direction}: a publisher's offer sends media", section.line)
        if any(t.kind == kind for t in tracks):
            raise _bad(f"more than one {kind} m-line: one audio and one video track per stream", section.line)
        pt, codec, rate, channels, rtpmap_line = _choose_codec(section, kind)
        fmtp_text, fmtp_line = section.fmtp.get(pt, ("", ""))
        fmtp = _parse_fmtp(fmtp_text)
        if codec == "H264":
            params = dict((k.lower(), v) for k, v in fmtp)
            mode = params.get("packetization-mode", "0")
            if mode not in ("0", "1"):
                raise _bad(f"H264 packetization-mode {mode} is not supported (0 or 1)", fmtp_line, UnsupportedMedia)
            if params.get("sprop-parameter-sets"):
                _check_sprop(params["sprop-parameter-sets"], fmtp_line)
        crypto, local_key = _srtp(section, index, answer_key_secret, require_srtp)
        track = TrackSpec(kind, codec, pt, rate, channels, fmtp, ssrc=_ssrc(section),
                          srtp_suite=crypto.suite if crypto else "", srtp_remote_key=crypto.key if crypto else b"",
                          srtp_local_key=local_key, source_host=source_host)
        try:
            check_track(track)
        except ValueError as error:
            raise _bad(f"the {kind} track cannot be received: {error}", rtpmap_line) from None
        tracks.append(track)
        mux.append(section.rtcp_mux)
        transports.append(section.transport)
        tags.append(crypto.tag if crypto else None)
    if not tracks:
        raise SdpError("the offer sends no media")
    return RtpOffer(tuple(tracks), tuple(mux), tuple(transports), tuple(tags))


def rtp_answer(offer: RtpOffer, address: str, ports: tuple[int, ...]) -> str:
    family = "IP6" if ":" in address else "IP4"
    lines = ["v=0", f"o=recnode 0 0 IN {family} {address}", "s=recnode", f"c=IN {family} {address}", "t=0 0"]
    transports = offer.transports or ("RTP/AVP",) * len(offer.tracks)
    tags = offer.crypto_tags or (None,) * len(offer.tracks)
    for track, port, mux, transport, tag in zip(offer.tracks, ports, offer.rtcp_mux, transports, tags, strict=True):
        lines.append(f"m={track.kind.value} {port} {transport} {track.payload_type}")
        encoding = f"{track.codec}/{track.clock_rate}" + (f"/{track.channels}" if track.channels > 1 else "")
        lines.append(f"a=rtpmap:{track.payload_type} {encoding}")
        lines.append(f"a=rtcp:{port + 1}" if not mux else "a=rtcp-mux")
        if tag is not None:
            lines.append(sdes.answer_line(tag, track.srtp_suite, track.srtp_local_key))
        lines.append("a=recvonly")
    return "\r\n".join(lines) + "\r\n"
