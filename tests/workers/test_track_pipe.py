"""TrackPipe, the per-track path of both inputs, fed by hand on an injected clock."""

from __future__ import annotations

from aiortc.rtp import RtcpByePacket, RtcpSenderInfo, RtcpSrPacket, RtpPacket

from contract.codes import MediaKind
from contract.worker import TrackSpec
from workers.inputs.track_pipe import KEYFRAME_REQUEST_RETRY_S, MAX_EARLY_REPORTS, RTP_SOURCE_SILENCE_S, TrackPipe

KEYFRAME_REQUEST_MIN_INTERVAL_S = 0.5  # README: "the worker asks for a key frame (PLI, at most every 0.5 s)"

V, A = MediaKind.VIDEO, MediaKind.AUDIO
SSRC = 77


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _pipe(kind: MediaKind = V, method: str = "pli"):
    spec = TrackSpec(V, "H264", 96, 90000) if kind is V else TrackSpec(A, "opus", 111, 48000, 2)
    clock = Clock()
    frames, reports, requests = [], [], []
    pipe = TrackPipe(spec, 0.25, frames.append, lambda *a: reports.append(a),
                     lambda ssrc, m: requests.append((clock.now, ssrc, m)), method, clock)
    return pipe, clock, frames, reports, requests


def _slice(seq: int, timestamp: int, ssrc: int = SSRC, idr: bool = False) -> RtpPacket:
    packet = RtpPacket(payload_type=96, sequence_number=seq, timestamp=timestamp, ssrc=ssrc, marker=1)
    packet.payload = (b"\x65" if idr else b"\x41") + b"\x88\x80\x10"  # first_mb_in_slice = 0
    return packet


def _sr(ssrc: int, ntp: int, rtp: int) -> RtcpSrPacket:
    return RtcpSrPacket(ssrc=ssrc, sender_info=RtcpSenderInfo(ntp_timestamp=ntp, rtp_timestamp=rtp,
                                                              packet_count=0, octet_count=0))


def test_first_ssrc_wins_others_are_counted_as_foreign():
    pipe, clock, frames, _, _ = _pipe()
    pipe.push(_slice(1, 3000, idr=True), clock.now)
    pipe.push(_slice(2, 6000, ssrc=99), clock.now)
    pipe.push(_slice(2, 6000), clock.now + 0.03)
    assert pipe.remote_ssrc == SSRC and pipe.last_packet == clock.now + 0.03
    assert [f.rtp_timestamp for f in frames] == [3000, 6000]
    stats = pipe.stats_dict()
    assert stats["foreign"] == 1 and stats["jitter_packets"] == 2 and stats["frames"] == 2


def test_early_sender_reports_are_kept_and_only_the_latched_ssrcs_delivered():
    pipe, clock, _, reports, _ = _pipe()
    for ssrc in range(1, MAX_EARLY_REPORTS + 2):  # one more SSRC than is kept: the last is not
        pipe.on_rtcp(_sr(ssrc, ssrc << 32, ssrc))
    pipe.on_rtcp(_sr(2, 7 << 32, 700))  # a newer report from a kept SSRC replaces its older one
    assert reports == []
    pipe.push(_slice(1, 3000, ssrc=2, idr=True), clock.now)
    assert reports == [(V, 7 << 32, 700)]
    pipe.on_rtcp(_sr(1, 8 << 32, 800))  # another SSRC's, now that the track's is known
    pipe.on_rtcp(_sr(2, 9 << 32, 900))
    assert reports == [(V, 7 << 32, 700), (V, 9 << 32, 900)]
    assert pipe.stats_dict()["sender_reports"] == 2


def test_an_early_report_of_an_ssrc_never_seen_is_dropped():
    pipe, clock, _, reports, _ = _pipe()
    for ssrc in range(MAX_EARLY_REPORTS + 1, 2 * MAX_EARLY_REPORTS + 2):
        pipe.on_rtcp(_sr(ssrc, 1 << 32, 1))
    pipe.push(_slice(1, 3000, idr=True), clock.now)
    pipe.on_rtcp(_sr(MAX_EARLY_REPORTS + 1, 1 << 32, 1))
    assert reports == [] and pipe.stats_dict()["sender_reports"] == 0


def test_a_new_ssrc_takes_over_only_after_the_followed_one_went_silent():
    pipe, clock, frames, reports, requests = _pipe()
    pipe.push(_slice(1, 3000, idr=True), clock.now)
    pipe.push(_slice(2, 6000), clock.now + 1 / 30)
    last = clock.now + 1 / 30
    pipe.push(_slice(500, 4_000_000_000, ssrc=99, idr=True), last + RTP_SOURCE_SILENCE_S - 0.01)  # too early
    assert pipe.remote_ssrc == SSRC and pipe.stats_dict()["foreign"] == 1
    pipe.on_rtcp(_sr(99, 50 << 32, 3_999_999_000))  # the newcomer reports first
    clock.now = after = last + RTP_SOURCE_SILENCE_S
    pipe.push(_slice(700, 4_000_000_000 + 3000, ssrc=99), after)  # not a key frame: dropped
    pipe.push(_slice(701, 4_000_000_000 + 6000, ssrc=99, idr=True), after + 1 / 30)
    pipe.push(_slice(702, 4_000_000_000 + 9000, ssrc=99), after + 2 / 30)
    assert pipe.remote_ssrc == 99
    # the new sender's timeline goes on from the old one's by the time that passed
    shift = 6000 + round(RTP_SOURCE_SILENCE_S * 90000) - (4_000_000_000 + 3000)
    assert [f.rtp_timestamp for f in frames] == [3000, 6000, 4_000_000_000 + 6000 + shift,
                                                4_000_000_000 + 9000 + shift]
    assert frames[2].keyframe
    assert reports == [(V, 50 << 32, (3_999_999_000 + shift) & 0xFFFFFFFF)]
    assert requests and requests[-1][1] == 99  # a key frame asked of the new sender
    stats = pipe.stats_dict()
    assert stats["ssrc_changes"] == 1 and stats["dropped_waiting_keyframe"] == 1 and stats["jitter_packets"] == 5


def test_only_the_offered_ssrc_is_followed():
    spec = TrackSpec(A, "opus", 111, 48000, 2, ssrc=SSRC)
    frames = []
    pipe = TrackPipe(spec, 0.25, frames.append, lambda *a: None, lambda *a: None)
    audio = RtpPacket(payload_type=111, sequence_number=1, timestamp=960, ssrc=99, payload=b"\xf8\xff\xfe")
    pipe.push(audio, 1.0)
    assert pipe.remote_ssrc is None and frames == [] and pipe.stats_dict()["foreign"] == 1
    audio.ssrc = SSRC
    pipe.push(audio, 1.02)
    assert pipe.remote_ssrc == SSRC and len(frames) == 1


def test_bye_from_the_tracks_ssrc_ends_it():
    pipe, clock, _, _, _ = _pipe()
    pipe.on_rtcp(RtcpByePacket(sources=[SSRC]))  # before the SSRC is known: whose?
    assert not pipe.ended
    pipe.push(_slice(1, 3000, idr=True), clock.now)
    pipe.on_rtcp(RtcpByePacket(sources=[99]))
    assert not pipe.ended
    pipe.on_rtcp(RtcpByePacket(sources=[99, SSRC]))
    assert pipe.ended


def _tick(pipe: TrackPipe, clock: Clock, now: float) -> None:
    clock.now = now
    pipe.tick(now)


def test_requests_wait_for_the_ssrc_then_are_spaced_and_repeated_until_a_key_frame():
    pipe, clock, frames, _, requests = _pipe()
    pipe.request_keyframe()  # before the first packet: no SSRC to ask yet
    _tick(pipe, clock, clock.now + 5.0)
    assert requests == []
    first = clock.now
    pipe.on_rtp(_slice(1, 3000))  # a delta frame: the request goes out with the SSRC
    assert requests == [(first, SSRC, "pli")]
    clock.now = first + 0.1
    pipe.request_keyframe()  # asked already: nothing more before the retry
    _tick(pipe, clock, first + KEYFRAME_REQUEST_MIN_INTERVAL_S + 0.1)
    _tick(pipe, clock, first + KEYFRAME_REQUEST_RETRY_S - 0.01)
    assert len(requests) == 1
    for n in range(1, 4):  # no key frame yet: again every RETRY_S
        _tick(pipe, clock, first + n * KEYFRAME_REQUEST_RETRY_S)
        _tick(pipe, clock, first + n * KEYFRAME_REQUEST_RETRY_S + 0.02)
    assert [t for t, _, _ in requests] == [first + n * KEYFRAME_REQUEST_RETRY_S for n in range(4)]
    clock.now = first + 3.5
    pipe.on_rtp(_slice(2, 6000, idr=True))
    _tick(pipe, clock, first + 10.0)  # satisfied: no more requests
    assert len(requests) == 4 and [f.keyframe for f in frames] == [False, True]
    assert pipe.stats_dict()["pli"] == 4 and pipe.stats_dict()["fir"] == 0


def test_a_new_request_after_a_key_frame_waits_only_the_minimum_interval():
    pipe, clock, _, _, requests = _pipe()
    first = clock.now
    pipe.push(_slice(1, 3000, idr=True), first)
    pipe.request_keyframe()
    clock.now = first + 0.1
    pipe.push(_slice(2, 6000, idr=True), clock.now)  # satisfies it
    clock.now = first + 0.2
    pipe.request_keyframe()  # too soon after the last one: deferred
    pipe.tick(first + KEYFRAME_REQUEST_MIN_INTERVAL_S - 0.01)
    assert len(requests) == 1
    clock.now = first + KEYFRAME_REQUEST_MIN_INTERVAL_S
    pipe.push(_slice(3, 9000), clock.now)  # goes out with the next packet
    assert [t for t, _, _ in requests] == [first, first + KEYFRAME_REQUEST_MIN_INTERVAL_S]


def test_a_first_key_frame_satisfies_an_early_request():
    pipe, clock, frames, _, requests = _pipe()
    pipe.request_keyframe()
    pipe.on_rtp(_slice(1, 3000, idr=True))
    pipe.tick(clock.now + 5.0)
    assert requests == [] and frames[0].keyframe


def test_fir_and_audio():
    pipe, clock, _, _, requests = _pipe(method="fir")
    pipe.push(_slice(1, 3000), clock.now)
    pipe.request_keyframe()
    assert requests == [(clock.now, SSRC, "fir")] and pipe.stats_dict()["fir"] == 1
    audio, clock, frames, _, requests = _pipe(A)
    packet = RtpPacket(payload_type=111, sequence_number=1, timestamp=960, ssrc=SSRC, marker=1)
    packet.payload = b"\xfc\x01\x02"
    audio.push(packet, clock.now)
    audio.request_keyframe()
    audio.tick(clock.now + 5.0)
    assert requests == [] and len(frames) == 1


def test_a_hole_is_waited_for_at_most_the_bound_then_a_key_frame_is_asked_for():
    pipe, clock, frames, _, requests = _pipe()
    start = clock.now
    pipe.push(_slice(1, 3000, idr=True), start)
    pipe.push(_slice(3, 9000), start + 0.01)  # 2 is lost
    assert len(frames) == 1
    pipe.tick(start + 0.1)
    assert len(frames) == 1
    clock.now = start + 0.3
    pipe.tick(start + 0.3)  # the hole is given up; the frame after it may lack a reference
    stats = pipe.stats_dict()
    assert stats["jitter_lost_packets"] == 1 and stats["pli"] == 1 and requests == [(start + 0.3, SSRC, "pli")]
    assert stats["max_release_delay_s"] == round(0.3 - 0.01, 4)
    assert len(frames) == 1  # not a key frame: dropped until one comes
    pipe.push(_slice(4, 12000, idr=True), start + 0.35)
    assert len(frames) == 2 and frames[1].keyframe
    pipe.tick(start + 5.0)
    assert len(requests) == 1
