"""WebRTC publishers for tests, each in its own process, and a minimal WHIP endpoint.

Publishers (run ``python -m testkit.whip {aiortc|ffmpeg} SPEC_JSON``,
or use ``start_publisher``): both POST an SDP offer to a WHIP URL, publish
``testkit.media.make_test_media`` pictures and sound decoded to raw frames, and
write a JSON manifest of exactly what they sent (``read_manifest``).

``aiortc``
    An aiortc ``RTCPeerConnection`` (``iceServers=[]``, host candidates limited to
    127.0.0.1) that encodes the raw frames itself (libx264 constrained baseline, libopus)
    and offers aiortc's default codecs, VP8 first (as browsers do); with
    ``video_codec="vp8"`` it offers VP8 only (libvpx). The sender's encoders are wrapped
    in this process to record every H.264 access unit (as NAL units), every whole VP8
    frame and every Opus packet handed to the packetizer. Options: drop chosen video packets
    (and every retransmission of them, RTX or not) on the way out, count the PLI / FIR /
    NACK it receives, keep publishing until killed (``vanish``), send audio late
    (``audio_delay_s``). Its Sender Reports pair each track's RTP timestamps with
    capture times on one clock (as browsers do), not with when packets left, so a
    publisher slowed by a busy machine keeps its tracks in sync.
``ffmpeg``
    FFmpeg's own WebRTC stack through PyAV's ``whip`` muxer: libx264 High profile with
    no B-frames (the muxer refuses B-frames) and libopus stereo; records every encoded
    packet it muxes.

``WhipEndpoint`` is the test's side of WHIP (RFC 9725): ``POST /whip/<name>`` with
``application/sdp`` calls ``on_offer(sdp)`` and answers ``201 Created`` with a
``Location`` and the SDP answer; ``DELETE <Location>`` calls ``on_delete``.
"""

from testkit.whip.endpoint import WhipEndpoint
from testkit.whip.spec import Manifest, PublisherSpec, read_manifest, start_publisher

__all__ = ["Manifest", "PublisherSpec", "WhipEndpoint", "read_manifest", "start_publisher"]
