"""An SRTP publisher that is not ours: FFmpeg's `rtp` muxer over its `srtp` protocol
(through PyAV), with FFmpeg's own SRTP code (not libsrtp, which the node uses).

It sends the test clip of ``testkit.media.make_test_media`` (the clip of a
``testkit.rtp.PublisherSpec``) as H.264 and Opus, one muxer per track to the answered ports, paced
in real time, each track with its SDES key (``srtp_out_suite`` / ``srtp_out_params``);
FFmpeg also sends SRTCP Sender Reports to the RTCP port. Run as its own process::

    keys = new_keys()
    answer = node.publish(room, stream, srtp_offer(offer_sdp(spec, True, True), keys))
    proc = start_srtp_sender(spec, parse_answer(answer.body.decode()), keys)
    assert proc.wait(30) == 0
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from fractions import Fraction

import av

from testkit.process import start_module
from testkit.rtp import PublisherSpec

SUITE = "AES_CM_128_HMAC_SHA1_80"
PAYLOAD_TYPES = {"video": 96, "audio": 111}  # as offer_sdp() announces them


def new_keys() -> dict[str, str]:
    """A fresh base64 master key || salt (30 bytes) per track."""
    return {kind: base64.b64encode(os.urandom(30)).decode() for kind in PAYLOAD_TYPES}


def srtp_offer(offer: str, keys: dict[str, str], suite: str = SUITE) -> str:
    """`offer` (RTP/AVP, from ``offer_sdp``) as SRTP: RTP/SAVP and an a=crypto line per m-line."""
    lines = []
    for line in offer.splitlines():
        if line.startswith("m="):
            kind = line[2:].split()[0]
            lines += [line.replace(" RTP/AVP ", " RTP/SAVP "), f"a=crypto:1 {suite} inline:{keys[kind]}"]
        else:
            lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def _open(kind: str, target: tuple[str, int, int], key: str, suite: str, spec: PublisherSpec, media):
    options = {"srtp_out_suite": suite, "srtp_out_params": key, "payload_type": str(PAYLOAD_TYPES[kind])}
    host, rtp_port, rtcp_port = target
    container = av.open(f"srtp://{host}:{rtp_port}?rtcpport={rtcp_port}", "w", format="rtp", options=options)
    if kind == "video":
        stream = container.add_mux_stream("h264", rate=spec.clip.fps, width=media.width, height=media.height)
        stream.time_base = Fraction(1, 90000)
    else:
        stream = container.add_stream("opus", rate=48000, layout="mono")
        stream.codec_context.extradata = media.opus_head
        stream.time_base = Fraction(1, 48000)
    return container, stream


def run(spec: PublisherSpec, targets: dict[str, tuple[str, int, int]], keys: dict[str, str], suite: str) -> None:
    media = spec.media()
    outputs = {kind: _open(kind, tuple(targets[kind]), keys[kind], suite, spec, media) for kind in targets}
    first_audio = media.audio[0].time_s  # Opus starts before 0 (priming): keep pts >= 0
    items = [(au.time_s, "video", au.data, round(au.time_s * 90000), au.keyframe) for au in media.video]
    items += [(p.time_s, "audio", p.data, round((p.time_s - first_audio) * 48000), False) for p in media.audio]
    start = time.monotonic() - first_audio
    for at, kind, data, pts, keyframe in sorted(items, key=lambda item: item[0]):
        if kind not in outputs:
            continue
        time.sleep(max(0.0, start + at - time.monotonic()))
        container, stream = outputs[kind]
        packet = av.Packet(data)
        packet.stream = stream
        packet.time_base = stream.time_base
        packet.pts = packet.dts = pts
        packet.is_keyframe = keyframe
        container.mux(packet)
    for container, _ in outputs.values():
        container.close()


def start_srtp_sender(spec: PublisherSpec, targets: dict[str, tuple[str, int, int]], keys: dict[str, str],
                      suite: str = SUITE) -> subprocess.Popen:
    """Start the sender process; `targets` as ``parse_answer`` gives them: (host, RTP port, RTCP port)."""
    arguments = json.dumps({"spec": spec.to_json(), "targets": targets, "keys": keys, "suite": suite})
    return start_module("testkit.srtp", arguments)


if __name__ == "__main__":
    raw = json.loads(sys.argv[1])
    run(PublisherSpec.from_json(raw["spec"]), raw["targets"], raw["keys"], raw["suite"])
