"""The pulled inputs' own logic: WhepInput against the test WHEP server (a real aiortc peer
in its own process), RtspInput's timestamps, the H.265 and AAC facts they rely on."""

from __future__ import annotations

import asyncio
import time
from fractions import Fraction
from types import SimpleNamespace

import aiohttp
import av
import numpy as np
import pytest

from contract.codes import MediaKind
from contract.worker import PullSpec, TrackSpec
from testkit import bitstream
from testkit.media import make_test_media
from testkit.ports import free_port
from testkit.whep import ServerSpec, start_server
from workers.codecs import aac, h265
from workers.frames import EncodedFrame
from workers.inputs.rtsp import DEFAULT_FRAME_TICKS, RtspInput, SourceError, _Track, choose_tracks
from workers.inputs.webrtc import InvalidOffer, WebRtcSettings
from workers.inputs.whep import WhepInput

CLIP_S = 2.0


async def _post(url: str, offer: str) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=offer, headers={"Content-Type": "application/sdp"}) as reply:
            assert reply.status == 201
            return await reply.text()


def test_whep_input_receives_the_servers_frames_as_sent(tmp_path):
    spec = ServerSpec(port=free_port(), record=str(tmp_path / "s.json"), clip_s=CLIP_S)
    server = start_server(spec)

    async def session():
        frames, reports, closed = [], [], []
        peer = WhepInput(WebRtcSettings(), frames.append, lambda *r: reports.append(r), closed.append)
        await peer.start()
        offer = await peer.make_offer()
        assert "a=recvonly" in offer and "H264" in offer and "VP8" in offer and "opus" in offer
        assert offer.index("H264") < offer.index("VP8")  # H.264 preferred
        tracks = await peer.apply_answer(await _post(f"http://127.0.0.1:{spec.port}{spec.path}", offer))
        await peer.wait_connected(10)
        deadline = time.monotonic() + CLIP_S + 1.5
        while time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            peer.tick(time.monotonic())
        stats = peer.stats()
        await peer.aclose()
        return tracks, frames, reports, closed, stats

    try:
        tracks, frames, reports, closed, stats = asyncio.run(session())
    finally:
        server.kill()
        server.wait()
    assert [(t.kind, t.codec) for t in tracks] == [(MediaKind.VIDEO, "H264"), (MediaKind.AUDIO, "opus")]
    media = make_test_media(duration_s=CLIP_S)
    video = [f.data for f in frames if f.kind is MediaKind.VIDEO]
    sent = bitstream.h264_slice_nals_from_aus([au.data for au in media.video] * 3)
    got = bitstream.h264_slice_nals_from_aus(video)
    assert len(got) >= 60 and got == sent[:len(got)]
    assert {kind for kind, _, _ in reports} == {MediaKind.VIDEO, MediaKind.AUDIO}  # Sender Reports taken
    assert not closed and stats["video"]["other_payload_types"] == 0


def test_whep_answers_that_are_not_usable(tmp_path):
    async def attempt(answer: str):
        peer = WhepInput(WebRtcSettings(), lambda f: None, lambda *r: None, lambda r: None)
        await peer.make_offer()
        try:
            await peer.apply_answer(answer)
        finally:
            await peer.aclose()

    with pytest.raises(InvalidOffer, match="no media section"):
        asyncio.run(attempt("v=0\r\nnot sdp\r\n"))
    with pytest.raises(InvalidOffer, match="SDP answer rejected"):
        asyncio.run(attempt("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
                            "a=rtpmap:96 VP9/90000\r\na=mid:0\r\n"))


def test_whep_connection_that_never_comes_up_is_an_os_error():
    async def attempt():
        peer = WhepInput(WebRtcSettings(), lambda f: None, lambda *r: None, lambda r: None)
        offer = await peer.make_offer()
        # An answer that points ICE nowhere: our own offer turned round.
        answer = offer.replace("a=recvonly", "a=sendonly").replace("a=setup:actpass", "a=setup:active")
        await peer.apply_answer(answer)
        try:
            await peer.wait_connected(1.0)
        finally:
            await peer.aclose()

    with pytest.raises(OSError, match="did not connect|connection failed|connection closed"):
        asyncio.run(attempt())


# -- RTSP: what FFmpeg's timestamps become ------------------------------------------------


def _h264_track() -> _Track:
    spec = TrackSpec(MediaKind.VIDEO, "H264", 0, 90000)
    from workers.codecs import video_codec

    return _Track(spec, 0, (90000, 90000), codec=video_codec("H264")(spec))


def _rtsp_input() -> RtspInput:
    return RtspInput(PullSpec(url="rtsp://127.0.0.1/x"), lambda f: None, lambda *r: None, lambda r: None)


def test_rtsp_video_never_goes_back_and_its_report_follows():
    """FFmpeg moves a track onto the camera's clock when the first Sender Reports come:
    backwards, the video goes on from where it was and its report carries the move."""
    media = make_test_media(duration_s=1.0)
    rtsp, track = _rtsp_input(), _h264_track()
    rtsp._tracks = [track]
    aus = [au.data for au in media.video[:6]]
    for index, pts in enumerate([None, 3000, 6000, 9000, 4000, 7000]):  # the 5th: FFmpeg's move back
        rtsp._take_video(track, aus[index], pts, 100.0 + index)
    items = list(rtsp._inbox)
    frames = [i for i in items if isinstance(i, EncodedFrame)]
    reports = [i for i in items if not isinstance(i, EncodedFrame)]
    # the first packet (no timestamp) one frame before the next; the move back undone
    assert [f.rtp_timestamp for f in frames] == [3000 - DEFAULT_FRAME_TICKS, 3000, 6000, 9000, 12000, 15000]
    assert frames[0].keyframe and bitstream.h264_slice_nals_from_aus([f.data for f in frames]) == \
        bitstream.h264_slice_nals_from_aus(aus)
    assert track.stats.timestamp_jumps == 1 and track.shift == 12000 - 4000
    # each report pairs a timestamp with its time on FFmpeg's timeline (the first, and after the move)
    (kind, ntp0, rtp0), (_, ntp1, rtp1) = reports
    assert kind is MediaKind.VIDEO and (rtp0, rtp1) == (0, 12000)
    assert ntp1 - ntp0 == (4000 << 32) // 90000


def test_rtsp_nothing_recordable_names_what_is_offered():
    streams = [SimpleNamespace(type="video", codec_context=SimpleNamespace(name="mjpeg")),
               SimpleNamespace(type="data", codec_context=None)]
    with pytest.raises(SourceError, match="offers video mjpeg, data unknown; recorded are H.264 and H.265"):
        choose_tracks(streams)


# -- codec facts -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def hevc_sps(tmp_path_factory) -> bytes:
    """The SPS of a real libx265 stream (Debian's FFmpeg makes the clip)."""
    import shutil

    from testkit.rtsp.clips import hevc_clip

    if shutil.which("ffmpeg") is None:
        pytest.skip("Debian's ffmpeg is not installed (bash .ci/install-media-tools)")
    clip = hevc_clip(tmp_path_factory.mktemp("hevc"), duration_s=1.0)
    with av.open(str(clip.path)) as container:
        first = next(bytes(p) for p in container.demux(container.streams.video[0]) if p.size)
    return next(n for n in bitstream.split_annexb(first) if h265.nal_type(n) == h265.NAL_SPS)


def test_h265_sps_size_and_parameter_sets_on_key_frames(hevc_sps):
    HEVC_SPS = hevc_sps
    assert h265.sps_size(HEVC_SPS) == (320, 240)
    with pytest.raises(ValueError):
        h265.sps_size(HEVC_SPS[:6])
    vps, pps = bytes([h265.NAL_VPS << 1, 1, 0x0C]), bytes([h265.NAL_PPS << 1, 1, 0xC1])
    idr = bytes([19 << 1, 1, 0xAF, 0x10])  # IDR_W_RADL
    spec = TrackSpec(MediaKind.VIDEO, "H265", 0, 90000)
    codec = h265.H265Codec(spec)
    assert codec.prepare_keyframe(b"\x00\x00\x00\x01" + idr) == b"\x00\x00\x00\x01" + idr  # nothing known yet
    with_sets = b"".join(b"\x00\x00\x00\x01" + n for n in (vps, HEVC_SPS, pps, idr))
    assert codec.is_keyframe(with_sets) and codec.prepare_keyframe(with_sets) == with_sets
    prepared = codec.prepare_keyframe(b"\x00\x00\x00\x01" + idr)
    assert prepared == with_sets and codec.keyframe_size(prepared) == (320, 240)
    assert not codec.is_keyframe(b"\x00\x00\x00\x01" + bytes([1 << 1, 1, 0xD0]))  # TRAIL_R


def test_aac_config_and_silence():
    assert aac.is_lc(bytes.fromhex("1188")) and not aac.is_lc(bytes.fromhex("2b92")) and not aac.is_lc(b"")
    silence = aac.silent_frame(48000, 1)
    decoder = av.CodecContext.create("aac", "r")
    decoder.extradata = aac.encoder_for(48000, 1).extradata
    frames = [f for _ in range(3) for f in decoder.decode(av.Packet(silence))]
    assert frames and all(np.abs(f.to_ndarray()).max() < 1e-3 for f in frames)


def test_g711_becomes_aac_on_a_continuous_timeline():
    transcoder = aac.AudioToAac("pcm_mulaw", 8000, 1)
    assert aac.is_lc(transcoder.config) and transcoder.sample_rate == 8000
    out = []
    for index in range(60):  # 20 ms packets; 20 of them (0.4 s) lost after the 20th
        if 20 <= index < 40:
            continue
        out += transcoder.transcode(bytes([0xFF]) * 160, index * 160, Fraction(1, 8000))
    timestamps = [t for _, t in out]
    assert timestamps == list(range(timestamps[0], timestamps[0] + 1024 * len(out), 1024))
    covered = timestamps[-1] + 1024 - timestamps[0]
    assert covered >= 60 * 160 - 2 * 1024  # the hole became silence (the fifo and encoder hold the rest)
