"""A plain-RTP publisher running in its own OS process.

It sends the clip of ``testkit.media.make_test_media`` as H.264 (RFC 6184,
packetization-mode 1, packetized by aiortc) and Opus (RFC 7587, one packet per
RTP packet) over real UDP sockets, paced in real time, with RTCP Sender Reports,
and records everything it did in a *manifest* (a pickled ``Manifest``).
By concern: ``spec`` (what it is told), ``plan`` (what packets go when),
``send`` (sockets, RTCP, the process), ``manifest`` (what it did), ``sdp``.

Typical use::

    spec = PublisherSpec(duration_s=3, manifest_path=str(tmp_path / "m.pkl"))
    sdp = offer_sdp(spec, True, True)           # give it to the node under test
    spec = spec.with_targets(parse_answer(answer_sdp))
    proc = start_publisher(spec)
    manifest = wait_manifest(spec.manifest_path, proc=proc)

Timing model: capture time 0 is ``Manifest.t0_wall`` (``time.time()``) /
``Manifest.t0_mono`` (``time.monotonic()``).  Video frame ``i`` is sent at
capture time ``i / fps``; Opus packet ``k`` at its capture time
``media.audio[k].time_s`` (first one at -6.5 ms, see ``testkit.media``)
plus ``Quirks.audio_delay_s``.  RTP timestamp = base + round(capture_time * clock)
(mod 2**32), clocks 90 kHz / 48 kHz.  Sender Reports are truthful: an SR sent at
wall time W carries NTP(W) and the RTP timestamp of capture time W - t0_wall,
also for a delayed audio track.
"""

from testkit.rtp.manifest import Manifest, SentPacket, SentReport, wait_manifest
from testkit.rtp.sdp import offer_sdp, parse_answer
from testkit.rtp.send import ntp_from_unix, start_publisher, unix_from_ntp
from testkit.rtp.spec import ALL_PACKETS, ClipSpec, PublisherSpec, Quirks, RtcpSpec, TrackSpec

__all__ = [
    "ALL_PACKETS", "ClipSpec", "Manifest", "PublisherSpec", "Quirks", "RtcpSpec", "SentPacket", "SentReport",
    "TrackSpec", "ntp_from_unix", "offer_sdp", "parse_answer", "start_publisher", "unix_from_ntp", "wait_manifest",
]
