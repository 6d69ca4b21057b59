"""The test kit: what the tests, the benchmarks and `recnode demo` share to drive a
node from outside as its users would.

- ``media``: a synthetic, deterministic H.264 (or VP8) + Opus clip whose video
  flashes exactly when its audio beeps.
- ``probe``: decode a recorded file and find those flashes and beeps;
  ``bitstream``: compare what files hold (NAL units, Opus packets) without decoding.
- ``rtp``: a plain-RTP publisher process (spec, planning, sending, SDP, manifest).
- ``whip``: WebRTC publishers (aiortc, FFmpeg's whip muxer) and a WHIP endpoint.
- ``node``: a real `recnode serve` process and a signed-API client; ``ports``;
  ``moto_server``: moto's S3 server with authentication on.
"""
