"""The SDP of a plain-RTP publisher: the offer that describes what it sends, and the
targets (host, RTP and RTCP port per kind) read from the answer."""

from __future__ import annotations

import base64
from typing import Any, Union

from testkit.media import TestMedia
from testkit.rtp.spec import PublisherSpec


def offer_sdp(
    spec_or_media: Union[PublisherSpec, TestMedia],
    video: bool | None = None,
    audio: bool | None = None,
    sprop: bool = True,
) -> str:
    """SDP offer (CRLF line ends) describing what the publisher sends.

    ``video`` / ``audio`` None (default): from a ``PublisherSpec``, describe the
    tracks that have an RTP target (i.e. are sent); from a ``TestMedia``, both.
    True / False force a section in or out -- e.g. ``offer_sdp(spec, True,
    True)`` for a spec whose targets only come from the answer.
    Payload types come from the spec (96 / 111 for a ``TestMedia``).
    """
    from_spec = isinstance(spec_or_media, PublisherSpec)
    if from_spec:
        spec, media = spec_or_media, spec_or_media.clip_media()
    else:
        spec, media = PublisherSpec(), spec_or_media
    if video is None:
        video = not from_spec or spec.video.rtp is not None
    if audio is None:
        audio = not from_spec or spec.audio.rtp is not None
    lines = [
        "v=0",
        "o=- 0 0 IN IP4 127.0.0.1",
        "s=recnode test publisher",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
    ]
    if video:
        lines += _video_section(spec.video.payload_type, media, sprop)
    if audio:
        lines += _audio_section(spec.audio.payload_type)
    return "\r\n".join(lines) + "\r\n"


def _video_section(pt: int, media: TestMedia, sprop: bool) -> list[str]:
    fmtp = f"a=fmtp:{pt} packetization-mode=1;profile-level-id=42e01f"
    if sprop:
        sets = ",".join(base64.b64encode(n).decode() for n in (media.sps, media.pps))
        fmtp += f";sprop-parameter-sets={sets}"
    return [f"m=video 9 RTP/AVP {pt}", f"a=rtpmap:{pt} H264/90000", fmtp, "a=sendonly"]


def _audio_section(pt: int) -> list[str]:
    return [
        f"m=audio 9 RTP/AVP {pt}",
        f"a=rtpmap:{pt} opus/48000/2",
        f"a=fmtp:{pt} minptime=10;useinbandfec=1",
        "a=sendonly",
    ]


def parse_answer(sdp: str) -> dict[str, tuple[str, int, int]]:
    """Map "video"/"audio" to (host, rtp_port, rtcp_port) from an SDP answer.

    Host from the media-level ``c=`` or else the session-level one; RTCP port
    from ``a=rtcp:<port>``, else the RTP port with ``a=rtcp-mux``, else
    rtp_port + 1.  Rejected sections (port 0) and repeated kinds are skipped.
    """
    session_host: str | None = None
    sections: list[dict[str, Any]] = []
    for line in sdp.splitlines():
        line = line.strip()
        if line.startswith("m="):
            kind, port = line[2:].split()[:2]
            sections.append({"kind": kind, "port": int(port.split("/")[0])})
        elif line.startswith("c="):
            host = line.split()[-1].split("/")[0]
            if sections:
                sections[-1]["host"] = host
            else:
                session_host = host
        elif sections and line.startswith("a=rtcp:"):
            sections[-1]["rtcp"] = int(line[len("a=rtcp:") :].split()[0])
        elif sections and line == "a=rtcp-mux":
            sections[-1]["mux"] = True
    result: dict[str, tuple[str, int, int]] = {}
    for s in sections:
        if s["port"] == 0 or s["kind"] in result:
            continue
        host = s.get("host", session_host)
        if host is None:
            raise ValueError(f"no c= line for the {s['kind']} section")
        default_rtcp = s["port"] if s.get("mux") else s["port"] + 1
        result[s["kind"]] = (host, s["port"], s.get("rtcp", default_rtcp))
    return result
