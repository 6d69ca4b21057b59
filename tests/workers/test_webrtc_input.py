"""WebRtcInput against real WebRTC peers on 127.0.0.1: aiortc and FFmpeg's whip muxer.

Publishers run in their own processes (testkit.whip) and reach the
input through a small WHIP endpoint in the test's event loop.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass

import aioice.ice
import av
import av.logging
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender
from aiortc.rtp import RtpPacket

from contract.codes import MediaKind
from testkit import bitstream, probe
from testkit.whip import Manifest, PublisherSpec, WhipEndpoint, read_manifest, start_publisher
from workers.codecs import h264, vp8
from workers.frames import EncodedFrame
from workers.inputs import aiortc_patches
from workers.inputs.webrtc import UnsupportedOffer, WebRtcInput, WebRtcSettings, _WebRtcTrack
from workers.inputs.webrtc_codecs import plan_offer

V, A = MediaKind.VIDEO, MediaKind.AUDIO
TICK_S = 0.02
PUBLISHER_TIMEOUT_S = 30


@dataclass
class Session:
    frames: list[EncodedFrame]
    reports: list[tuple[MediaKind, int, int]]
    closed: list[str]
    stats: dict[str, dict[str, float]]
    tracks: tuple
    manifest: Manifest
    deletes: int
    returncode: int | None
    keyframe_requested_at: list[int]
    polled_sockets: int  # the most ICE sockets read on the tick at once
    max_tick_gap_s: float  # the longest the test's ticker took between two ticks (a busy machine stretches it)

    def of(self, kind: MediaKind) -> list[EncodedFrame]:
        return [f for f in self.frames if f.kind is kind]


async def _ticker(webrtc: WebRtcInput, frames: list[EncodedFrame], keyframe_request_after: int | None,
                  requested_at: list[int], polled: list[int], tick_gap: list[float]) -> None:
    last = time.monotonic()
    while True:
        await asyncio.sleep(TICK_S)
        now = time.monotonic()
        tick_gap[0], last = max(tick_gap[0], now - last), now
        webrtc.tick(now)
        polled[0] = max(polled[0], webrtc._ice_poller.polled)
        video = sum(1 for f in frames if f.kind is V)
        if keyframe_request_after is not None and not requested_at and video >= keyframe_request_after:
            requested_at.append(video)
            webrtc.request_keyframe()


async def publish(kind: str, tmp_path, settings: WebRtcSettings = WebRtcSettings(), vanish_after_s: float | None = None,
                  keyframe_request_after: int | None = None, **spec) -> Session:
    """Run one publisher process against a fresh WebRtcInput until the publisher is done."""
    frames: list[EncodedFrame] = []
    reports: list[tuple[MediaKind, int, int]] = []
    closed: list[str] = []
    webrtc = WebRtcInput(settings, frames.append, lambda k, ntp, rtp: reports.append((k, ntp, rtp)), closed.append)
    await webrtc.start()
    endpoint = WhipEndpoint(webrtc.accept_offer)
    url = await endpoint.start()
    requested_at: list[int] = []
    polled, tick_gap = [0], [0.0]
    ticker = asyncio.create_task(_ticker(webrtc, frames, keyframe_request_after, requested_at, polled, tick_gap))
    manifest_path = tmp_path / f"{kind}-manifest.json"
    process = await start_publisher(kind, PublisherSpec(url=url, manifest=str(manifest_path), **spec))
    try:
        if vanish_after_s is None:
            await asyncio.wait_for(process.wait(), PUBLISHER_TIMEOUT_S)
            await asyncio.sleep(0.3)  # frames released by the last ticks
        else:
            deadline = time.monotonic() + PUBLISHER_TIMEOUT_S
            while not manifest_path.exists() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert frames, "no media before the publisher vanished"
            assert not closed
            process.send_signal(signal.SIGKILL)  # gone: no BYE, no DTLS close_notify, no DELETE
            await process.wait()
            deadline = time.monotonic() + vanish_after_s
            while not closed and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        ticker.cancel()
        stats, tracks = webrtc.stats(), webrtc.tracks
        await webrtc.aclose()
        await endpoint.stop()
    return Session(frames, reports, closed, stats, tracks, read_manifest(manifest_path), endpoint.deletes,
                   process.returncode, requested_at, polled[0], tick_gap[0])


def decode_h264(aus: list[bytes]) -> tuple[int, list[str]]:
    """Decode Annex-B access units with FFmpeg's h264 decoder: (pictures, errors logged or raised)."""
    decoder = av.CodecContext.create("h264", "r")
    pictures = 0
    errors: list[str] = []
    with probe.capture_ffmpeg_logs() as logs:
        for au in aus + [None]:
            try:
                pictures += len(decoder.decode(None if au is None else av.Packet(au)))
            except av.FFmpegError as error:
                errors.append(str(error))
    errors += [message for level, _name, message in logs if level <= av.logging.ERROR]
    return pictures, errors


def check_video(frames: list[EncodedFrame]) -> None:
    assert frames[0].keyframe
    first = [h264.nal_type(n) for n in h264.split_annexb(frames[0].data)]
    assert h264.NAL_SPS in first and h264.NAL_PPS in first and h264.NAL_IDR in first
    for frame in frames:
        assert frame.data.startswith(h264.START_CODE)
        assert frame.keyframe == h264.is_keyframe(frame.data)
        if frame.keyframe:
            kinds = [h264.nal_type(n) for n in h264.split_annexb(frame.data)]
            assert h264.NAL_SPS in kinds and h264.NAL_PPS in kinds
    timestamps = [f.rtp_timestamp for f in frames]
    assert timestamps == sorted(timestamps) and len(set(timestamps)) == len(timestamps)
    arrivals = [f.arrival for f in frames]
    assert arrivals == sorted(arrivals)


def run(coroutine):
    return asyncio.run(coroutine)


# -- aiortc publisher -----------------------------------------------------------------


def test_aiortc_publisher_frames_equal_what_was_sent(tmp_path):
    session = run(publish("aiortc", tmp_path, video_frames=90, keyframe_request_after=40))
    manifest = session.manifest
    assert not manifest.error
    # aiortc offers VP8 first, like browsers: H.264 is chosen anyway, and the answer holds only H.264.
    assert manifest.offer.index("VP8/90000") < manifest.offer.index("H264/90000")
    assert "VP8" not in manifest.answer
    assert {t.kind: t.codec for t in session.tracks} == {V: "H264", A: "opus"}

    video, audio = session.of(V), session.of(A)
    check_video(video)
    pictures, errors = decode_h264([f.data for f in video])
    assert not errors and pictures == len(video)
    assert bitstream.h264_slice_nals_from_aus(f.data for f in video) == \
        bitstream.h264_slice_nals_from_aus(manifest.video_annexb())
    assert len(video) == len(manifest.video_aus) >= 85
    assert [f.data for f in audio] == manifest.audio()
    assert len(audio) >= 140
    assert {kind for kind, _, _ in session.reports} == {V, A}
    assert all(ntp > 0 for _, ntp, _ in session.reports)
    stats = session.stats
    assert stats["video"]["lost"] == 0 and stats["video"]["dropped_frames"] == 0
    assert stats["video"]["frames"] == len(video) and stats["audio"]["frames"] == len(audio)
    assert stats["video"]["sender_reports"] >= 1
    # request_keyframe() sent a PLI and the publisher's next frames include a key frame.
    [requested] = session.keyframe_requested_at
    assert stats["video"]["pli"] == 1 and manifest.pli_received == 1
    assert any(f.keyframe for f in video[requested:requested + 10])
    assert not aiortc_patches._NeverDecode.warned
    assert session.closed, "the publisher closed its peer connection"
    assert session.polled_sockets >= 1  # media came through the tick, not a wakeup per datagram


def test_aiortc_vp8_publisher_frames_equal_what_was_sent(tmp_path):
    session = run(publish("aiortc", tmp_path, video_frames=90, keyframe_request_after=40, video_codec="vp8"))
    manifest = session.manifest
    assert not manifest.error
    assert "H264" not in manifest.offer and "H264" not in manifest.answer
    assert {t.kind: t.codec for t in session.tracks} == {V: "VP8", A: "opus"}
    video = session.of(V)
    assert [f.data for f in video] == manifest.vp8() and len(video) >= 85
    assert [f.keyframe for f in video] == [vp8.is_keyframe(f) for f in manifest.vp8()] and video[0].keyframe
    decoder = av.CodecContext.create("vp8", "r")
    assert sum(len(decoder.decode(av.Packet(f.data))) for f in video) == len(video)
    assert [f.data for f in session.of(A)] == manifest.audio()
    stats = session.stats["video"]
    assert stats["lost"] == 0 and stats["dropped_frames"] == 0 and stats["dropped_malformed"] == 0
    [requested] = session.keyframe_requested_at
    assert stats["pli"] == 1 and manifest.pli_received == 1
    assert any(f.keyframe for f in video[requested:requested + 10])


def test_unrepairable_loss_is_bounded_and_asks_for_a_key_frame(tmp_path):
    settings = WebRtcSettings(jitter_max_wait_s=0.25)
    # Three video packets never arrive: neither the originals nor any retransmission.
    session = run(publish("aiortc", tmp_path, settings, video_frames=120, audio=False,
                          drop_video_packets=(40, 120, 200)))
    manifest = session.manifest
    assert not manifest.error
    assert len(manifest.dropped_sequence_numbers) == 3, manifest.video_packets_sent
    stats = session.stats["video"]
    assert stats["lost"] >= 3
    assert stats["nack"] >= 1 and manifest.nack_received >= 1  # repair was tried, and failed
    assert stats["pli"] >= 1 and manifest.pli_received >= 1  # then a key frame was asked for
    # Never held longer than the bound: released by the first tick after it, however
    # late a busy machine made that tick (4-decimal rounding of the stat).
    assert stats["max_release_delay_s"] <= settings.jitter_max_wait_s + session.max_tick_gap_s + 1e-4
    video = session.of(V)
    check_video(video)
    pictures, errors = decode_h264([f.data for f in video])
    assert not errors and pictures == len(video)
    gaps = [b.arrival - a.arrival for a, b in zip(video, video[1:])]
    assert max(gaps) <= 1.0
    # Every frame delivered is a frame the publisher sent, in order, and frames were lost.
    sent = bitstream.h264_slice_nals_from_aus(manifest.video_annexb())
    got = bitstream.h264_slice_nals_from_aus(f.data for f in video)
    assert len(got) < len(sent)
    remaining = iter(sent)
    assert all(nal in remaining for nal in got)  # a subsequence of what was sent


def test_publisher_that_vanishes_is_reported(tmp_path, monkeypatch):
    # aioice checks consent every CONSENT_INTERVAL (5 s) and gives up after CONSENT_FAILURES (6):
    # both are module globals read at use, so the test shortens them to ~2 s in this process.
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.2)
    monkeypatch.setattr(aioice.ice, "CONSENT_FAILURES", 3)
    session = run(publish("aiortc", tmp_path, video_frames=30, audio=False, vanish=True, linger_s=0.0,
                          vanish_after_s=8.0))
    assert session.closed, "on_closed was not called after the peer vanished"
    assert session.closed[0] in ("connection failed", "dtls closed")
    assert len(session.closed) == 1


# -- FFmpeg's WebRTC stack (PyAV whip muxer) ----------------------------------------------


def test_ffmpeg_whip_high_profile(tmp_path):
    session = run(publish("ffmpeg", tmp_path, video_frames=90))
    manifest = session.manifest
    assert not manifest.error
    tracks = {t.kind: t for t in session.tracks}
    assert tracks[V].codec == "H264" and tracks[V].fmtp_value("profile-level-id").startswith("64")
    assert tracks[A].codec == "opus"
    video, audio = session.of(V), session.of(A)
    check_video(video)
    sps = next(n for n in h264.split_annexb(video[0].data) if h264.nal_type(n) == h264.NAL_SPS)
    assert h264.parse_sps(sps).profile_idc == 100  # High
    pictures, errors = decode_h264([f.data for f in video])
    assert not errors and pictures == len(video)
    assert bitstream.h264_slice_nals_from_aus(f.data for f in video) == \
        bitstream.h264_slice_nals_from_aus(manifest.video_annexb())
    assert [f.data for f in audio] == manifest.audio()
    assert len(video) == 90 and len(audio) >= 140
    assert {kind for kind, _, _ in session.reports} == {V, A}  # FFmpeg reports once per stream at start
    assert session.deletes == 1  # FFmpeg unpublishes with DELETE on close


# -- offers and answers (no media) ----------------------------------------------------


async def _offer(video_codecs=None, audio_codecs=None, audio=True, video=True, data_channel=False) -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        if audio:
            transceiver = pc.addTransceiver("audio", direction="sendonly")
            if audio_codecs:
                transceiver.setCodecPreferences(audio_codecs)
        if video:
            transceiver = pc.addTransceiver("video", direction="sendonly")
            if video_codecs:
                transceiver.setCodecPreferences(video_codecs)
        if data_channel:
            pc.createDataChannel("chat")
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


def _capability(kind: str, name: str, profile_level_id: str | None = None):
    for codec in RTCRtpSender.getCapabilities(kind).codecs:
        if codec.name.lower() == name.lower() and (
                profile_level_id is None or codec.parameters.get("profile-level-id") == profile_level_id):
            return codec
    raise LookupError(name)


async def _answer(offer: str, settings: WebRtcSettings = WebRtcSettings()) -> tuple[str, tuple]:
    webrtc = WebRtcInput(settings, lambda f: None, lambda *a: None, lambda r: None)
    await webrtc.start()
    try:
        answer = await webrtc.accept_offer(offer)
        return answer, webrtc.tracks
    finally:
        await webrtc.aclose()


def _video_section(sdp: str) -> str:
    return sdp[sdp.index("m=video"):]


@pytest.mark.parametrize("profile_level_id", ["42e01f", "42001f", "4d001f", "64001f", "640c1f"])
def test_h264_profiles_are_accepted_and_echoed(profile_level_id):
    offer = run(_offer(video_codecs=[_capability("video", "H264", profile_level_id),
                                     _capability("video", "rtx")]))
    answer, tracks = run(_answer(offer))
    [video] = [t for t in tracks if t.kind is V]
    assert video.codec == "H264" and video.fmtp_value("profile-level-id") == profile_level_id
    assert video.fmtp_value("packetization-mode") == "1"
    section = _video_section(answer)
    assert f"profile-level-id={profile_level_id}" in section
    assert f"a=rtpmap:{video.payload_type} H264/90000" in section


def test_vp8_first_offer_gets_h264_only_answer():
    offer = run(_offer())  # aiortc's default order: VP8, then H.264
    video_offer = _video_section(offer)
    assert video_offer.index("VP8/90000") < video_offer.index("H264/90000")
    answer, tracks = run(_answer(offer))
    [video] = [t for t in tracks if t.kind is V]
    assert video.codec == "H264"
    m_line = _video_section(answer).split("\r\n")[0].split()
    rtpmaps = [line for line in _video_section(answer).split("\r\n") if line.startswith("a=rtpmap:")]
    assert all("H264" in line or "rtx" in line for line in rtpmaps)
    assert m_line[3] == str(video.payload_type)  # first (and only media) payload type


def test_vp8_only_offer_gets_vp8_answer():
    offer = run(_offer(video_codecs=[_capability("video", "VP8"), _capability("video", "rtx")]))
    answer, tracks = run(_answer(offer))
    [video] = [t for t in tracks if t.kind is V]
    assert (video.codec, video.clock_rate) == ("VP8", 90000)
    section = _video_section(answer)
    rtpmaps = [line for line in section.split("\r\n") if line.startswith("a=rtpmap:")]
    assert f"a=rtpmap:{video.payload_type} VP8/90000" in rtpmaps
    assert all("VP8" in line or "rtx" in line for line in rtpmaps)


def test_vp8_is_taken_when_the_offered_h264_is_not_recordable():
    offer = run(_offer(audio=False, video_codecs=[_capability("video", "VP8"), _capability("video", "H264", "42e01f")]))
    offer = offer.replace("packetization-mode=1", "packetization-mode=0")
    [plan] = plan_offer(offer)
    assert plan.track.codec == "VP8"


def test_offer_without_h264_or_vp8_is_refused_naming_both():
    offer = run(_offer(audio=False, video_codecs=[_capability("video", "VP8")]))
    with pytest.raises(UnsupportedOffer, match="H264 .* or VP8; offered: VP9"):
        plan_offer(offer.replace("VP8/90000", "VP9/90000"))


def test_audio_without_opus_is_refused():
    offer = run(_offer(video=False, audio_codecs=[_capability("audio", "PCMU")]))
    with pytest.raises(UnsupportedOffer, match="opus"):
        run(_answer(offer))


def test_data_channel_is_refused_not_dropped():
    offer = run(_offer(data_channel=True))
    with pytest.raises(UnsupportedOffer, match="data channel"):
        run(_answer(offer))


def test_h264_packetization_mode_0_is_refused():
    offer = run(_offer(audio=False, video_codecs=[_capability("video", "H264", "42e01f")]))
    offer = offer.replace("packetization-mode=1", "packetization-mode=0")
    with pytest.raises(UnsupportedOffer, match="packetization-mode=0"):
        run(_answer(offer))


def test_audio_only_and_video_only_offers():
    _, tracks = run(_answer(run(_offer(video=False))))
    assert [t.kind for t in tracks] == [A]
    _, tracks = run(_answer(run(_offer(audio=False))))
    assert [t.kind for t in tracks] == [V]


def test_candidates_use_the_port_range_and_advertised_address():
    low = 41000 + os.getpid() % 2000
    settings = WebRtcSettings(host_addresses=("127.0.0.1",), advertised_address="203.0.113.7",
                              port_range=(low, low + 20))
    answer, _ = run(_answer(run(_offer()), settings))
    candidates = [line.split() for line in answer.split("\r\n") if line.startswith("a=candidate:")]
    assert candidates
    for candidate in candidates:
        assert candidate[4] == "203.0.113.7" and low <= int(candidate[5]) <= low + 20
    assert "127.0.0.1" not in answer
    assert "c=IN IP4 203.0.113.7" in answer


def test_unbindable_host_address_is_an_os_error():
    for settings in (WebRtcSettings(host_addresses=("192.0.2.1",)),  # TEST-NET-1: not ours
                     WebRtcSettings(host_addresses=("192.0.2.1",), port_range=(42000, 42002))):
        with pytest.raises(OSError):
            run(_answer(run(_offer()), settings))


def test_second_offer_is_refused():
    async def scenario():
        webrtc = WebRtcInput(WebRtcSettings(), lambda f: None, lambda *a: None, lambda r: None)
        await webrtc.start()
        offer = await _offer()
        await webrtc.accept_offer(offer)
        try:
            with pytest.raises(RuntimeError):
                await webrtc.accept_offer(offer)
        finally:
            await webrtc.aclose()

    run(scenario())


def test_fir_when_the_publisher_only_offers_fir():
    offer = run(_offer(audio=False, video_codecs=[_capability("video", "H264", "42e01f")]))
    assert "nack pli" in offer
    [plan] = plan_offer(offer)
    assert plan.keyframe_request == "pli"
    fir_only = offer.replace(" nack pli", " ccm fir")
    [plan] = plan_offer(fir_only)
    assert plan.keyframe_request == "fir"


# -- one track, fed by hand (the shared TrackPipe itself: tests/workers/test_track_pipe.py) ---------


def _track(kind: str = "video", offer_edit=lambda sdp: sdp):
    offer = offer_edit(run(_offer(audio=kind == "audio", video=kind == "video")))
    [plan] = plan_offer(offer)
    assert plan.codec.payloadType == SLICE_PAYLOAD_TYPE
    frames, requests = [], []
    track = _WebRtcTrack(plan, 0.25, frames.append, lambda *a: None,
                         lambda ssrc, method: requests.append((ssrc, method)))
    return track, frames, requests


SLICE_PAYLOAD_TYPE = 99  # the payload type of the H.264 aiortc offers first


def _slice(seq: int, timestamp: int, ssrc: int = 77, idr: bool = False,
           payload_type: int = SLICE_PAYLOAD_TYPE) -> RtpPacket:
    packet = RtpPacket(payload_type=payload_type, sequence_number=seq, timestamp=timestamp, ssrc=ssrc, marker=1)
    packet.payload = (b"\x65" if idr else b"\x41") + b"\x88\x80\x10"  # first_mb_in_slice = 0
    return packet


def test_track_counts_backwards_timestamps_and_keeps_decode_order():
    """What B-frames would look like: frames stay in sequence (decode) order, counted."""
    track, frames, _ = _track()
    for seq, timestamp in [(1, 3000), (2, 12000), (3, 6000), (4, 9000), (5, 18000)]:
        track.on_rtp(_slice(seq, timestamp, idr=seq == 1))
    assert [f.rtp_timestamp for f in frames] == [3000, 12000, 6000, 9000, 18000]
    assert track.stats_dict()["reordered_timestamps"] == 2


def test_track_stats_and_the_negotiated_request_method():
    track, frames, requests = _track(offer_edit=lambda sdp: sdp.replace(" nack pli", " ccm fir"))
    track.on_rtp(_slice(1, 3000, idr=True))
    track.on_rtp(_slice(3, 9000))  # 2 is lost
    track.on_nack([2])
    track.pipe.tick(time.monotonic() + 0.3)  # given up: a key frame is asked for
    assert requests == [(77, "fir")] and len(frames) == 1
    stats = track.stats_dict()
    assert list(stats)[:7] == ["packets", "frames", "lost", "nack", "pli", "dropped_frames", "max_release_delay_s"]
    track.on_rtp(_slice(4, 12000, idr=True, payload_type=SLICE_PAYLOAD_TYPE + 1))  # a codec not chosen
    assert track.stats_dict()["other_payload_types"] == 1 and len(frames) == 1
    assert {k: stats[k] for k in ("packets", "frames", "lost", "nack", "nack_sequence_numbers", "pli", "fir")} == \
        {"packets": 2, "frames": 1, "lost": 1, "nack": 1, "nack_sequence_numbers": 1, "pli": 0, "fir": 1}
    assert {"foreign", "sender_reports", "reordered_timestamps", "jitter_late", "dropped_waiting_keyframe",
            "dropped_malformed", "keyframe_requests"} <= set(stats)
