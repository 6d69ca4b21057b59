"""SDP for plain-RTP publishing: the publisher's offer describes what it will send
(RFC 4566/3264); the answer tells it where the stream's worker listens."""

from __future__ import annotations

from dataclasses import dataclass

from contract.codes import MediaKind
from contract.worker import TrackSpec

SUPPORTED = {(MediaKind.VIDEO, "h264"): "H264", (MediaKind.AUDIO, "opus"): "opus"}
MAX_SDP_BYTES = 16384
PLAIN_RTP_TRANSPORTS = ("RTP/AVP", "RTP/AVPF")


class SdpError(ValueError):
    """The offer is malformed or asks for what the node does not record."""


@dataclass(frozen=True)
class RtpOffer:
    tracks: tuple[TrackSpec, ...]
    rtcp_mux: tuple[bool, ...]


@dataclass
class _Section:
    kind: str
    payload_types: list[int]
    rtpmap: dict[int, tuple[str, int, int]]
    fmtp: dict[int, str]
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
            raise SdpError(f"malformed SDP line: {line[:60]!r}")
        key, value = line[0], line[2:]
        if key == "m":
            parts = value.split()
            if len(parts) < 4:
                raise SdpError(f"malformed m-line: {line[:60]!r}")
            try:
                pts = [int(p) for p in parts[3:]]
            except ValueError:
                raise SdpError(f"malformed payload types in m-line: {line[:60]!r}") from None
            if parts[2] not in PLAIN_RTP_TRANSPORTS:
                raise SdpError(f"unsupported transport {parts[2]!r}: plain RTP (RTP/AVP) expected")
            sections.append(_Section(parts[0], pts, {}, {}))
        elif key == "a" and sections:
            _attribute(sections[-1], value)
    if not sections:
        raise SdpError("the offer has no m-line")
    return sections


def _attribute(section: _Section, value: str) -> None:
    name, _, rest = value.partition(":")
    if name == "rtpmap":
        pt_text, _, encoding = rest.partition(" ")
        parts = encoding.split("/")
        try:
            pt = int(pt_text)
            rate = int(parts[1])
            channels = int(parts[2]) if len(parts) > 2 else 1
        except (ValueError, IndexError):
            raise SdpError(f"malformed rtpmap: {value[:60]!r}") from None
        section.rtpmap[pt] = (parts[0], rate, channels)
    elif name == "fmtp":
        pt_text, _, params = rest.partition(" ")
        try:
            section.fmtp[int(pt_text)] = params
        except ValueError:
            raise SdpError(f"malformed fmtp: {value[:60]!r}") from None
    elif name in ("sendonly", "recvonly", "sendrecv", "inactive"):
        section.direction = name
    elif name == "rtcp-mux":
        section.rtcp_mux = True


def parse_rtp_offer(text: str) -> RtpOffer:
    tracks: list[TrackSpec] = []
    mux: list[bool] = []
    for section in _sections(text):
        if section.kind not in ("audio", "video"):
            raise SdpError(f"unsupported media {section.kind!r}: audio and video only")
        kind = MediaKind(section.kind)
        if section.direction in ("recvonly", "inactive"):
            raise SdpError(f"the {kind} m-line is {section.direction}: a publisher's offer sends media")
        if any(t.kind == kind for t in tracks):
            raise SdpError(f"more than one {kind} m-line: one audio and one video track per stream")
        chosen = None
        for pt in section.payload_types:
            name, rate, channels = section.rtpmap.get(pt, ("", 0, 0))
            if (kind, name.lower()) in SUPPORTED:
                chosen = (pt, SUPPORTED[(kind, name.lower())], rate, channels)
                break
        if chosen is None:
            wanted = "H264" if kind is MediaKind.VIDEO else "opus"
            raise SdpError(f"the {kind} m-line offers no {wanted} payload type (rtpmap)")
        pt, codec, rate, channels = chosen
        fmtp = _parse_fmtp(section.fmtp.get(pt, ""))
        if codec == "H264":
            mode = dict((k.lower(), v) for k, v in fmtp).get("packetization-mode", "0")
            if mode not in ("0", "1"):
                raise SdpError(f"H264 packetization-mode {mode} is not supported (0 or 1)")
        tracks.append(TrackSpec(kind, codec, pt, rate, channels, fmtp))
        mux.append(section.rtcp_mux)
    if not tracks:
        raise SdpError("the offer sends no media")
    return RtpOffer(tuple(tracks), tuple(mux))


def rtp_answer(offer: RtpOffer, address: str, ports: tuple[int, ...]) -> str:
    family = "IP6" if ":" in address else "IP4"
    lines = ["v=0", f"o=recnode 0 0 IN {family} {address}", "s=recnode", f"c=IN {family} {address}", "t=0 0"]
    for track, port, mux in zip(offer.tracks, ports, offer.rtcp_mux, strict=True):
        lines.append(f"m={track.kind.value} {port} RTP/AVP {track.payload_type}")
        encoding = f"{track.codec}/{track.clock_rate}" + (f"/{track.channels}" if track.channels > 1 else "")
        lines.append(f"a=rtpmap:{track.payload_type} {encoding}")
        lines.append(f"a=rtcp:{port + 1}" if not mux else "a=rtcp-mux")
        lines.append("a=recvonly")
    return "\r\n".join(lines) + "\r\n"
