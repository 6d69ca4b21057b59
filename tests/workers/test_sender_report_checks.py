"""Sender Reports checked against the track's own media (workers.clock.report_verdict,
StreamClock.on_sender_report): NTP 0, RTP off the media, NTP off the believed transit."""

from hypothesis import given, settings
from hypothesis import strategies as st

from contract.codes import MediaKind
from contract.tuning import SR_MAX_SKEW_S
from workers.clock import Basis, StreamClock, Verdict, report_verdict
from workers.timeline import Timeline, start_near

V, A = MediaKind.VIDEO, MediaKind.AUDIO
RATES = {V: 90000, A: 48000}
WALL0 = 1_790_000_000.0  # the sender's wall clock (Unix seconds) at capture 0
NTP_EPOCH_OFFSET = 2208988800
U32 = st.integers(0, 2**32 - 1)
PLACEMENT_BOUND_S = 5.0  # README: a track is never placed further than this from its arrival times


def ntp(unix_s: float) -> int:
    return round((unix_s + NTP_EPOCH_OFFSET) * 2**32)


class Sender:
    """A truthful sender: capture time t leaves at once and arrives `transit` later (local
    monotonic = t + transit); each track's RTP timestamps start at a random base."""

    def __init__(self, bases: dict[MediaKind, int], transit: float = 100.0):
        self.bases, self.transit = bases, transit
        self.clock = StreamClock(RATES, sync_wait_s=1.5)

    def rtp(self, kind: MediaKind, t: float) -> int:
        return self.bases[kind] + round(t * RATES[kind])

    def frames(self, kind: MediaKind, until: float) -> None:
        step = 1 / 30 if kind is V else 0.02
        for i in range(int(until / step) + 1):
            self.clock.on_frame(kind, self.rtp(kind, i * step), i * step + self.transit)

    def report(self, kind: MediaKind, t: float) -> Verdict | None:
        return self.clock.on_sender_report(kind, ntp(WALL0 + t), self.rtp(kind, t) & 0xFFFFFFFF, t + self.transit)

    def media_time(self, kind: MediaKind, t: float) -> float:
        return self.clock.media_time(kind, self.rtp(kind, t), Basis.SENDER)


@given(st.fixed_dictionaries({V: st.integers(0, 2**40), A: st.integers(0, 2**40)}))
def test_truthful_reports_are_believed_and_line_the_tracks_up(bases):
    sender = Sender(bases)
    sender.frames(V, 1.0)
    sender.frames(A, 1.0)
    assert sender.report(V, 1.0) is None and sender.report(A, 1.0) is None
    assert sender.clock.basis() is Basis.SENDER
    assert abs(sender.media_time(V, 0.5) - sender.media_time(A, 0.5)) < 1e-4


@given(U32, U32)
def test_ntp_zero_is_refused_whatever_the_rtp(fraction, rtp):
    assert report_verdict(fraction, rtp, 0.0, 90000, (rtp, 0.0), None) is Verdict.NTP_ZERO


NTP_NEAR = st.floats(-4.0, 4.0).map(lambda off: ntp(WALL0 + 2.0 + off))  # near the truth, or anything
RTP_NEAR = st.integers(-4 * 90000, 4 * 90000).map(lambda off: (123_456 + 2 * 90000 + off) & 0xFFFFFFFF)


@settings(max_examples=300)
@given(ntp64=st.one_of(NTP_NEAR, st.integers(0, 2**64 - 1)), rtp32=st.one_of(RTP_NEAR, U32),
       late=st.floats(0, 3.0))
def test_no_report_moves_a_track_more_than_twice_the_bound(ntp64, rtp32, late):
    """After a truthful report, whatever report comes (any NTP, any RTP, any time) is either
    refused (the mapping stays as it was) or moves the track's media by at most 2 bounds."""
    sender = Sender({V: 123_456, A: 3_000_000_000})
    sender.frames(V, 2.0)
    assert sender.report(V, 1.0) is None
    before = sender.media_time(V, 2.0)
    verdict = sender.clock.on_sender_report(V, ntp64, rtp32, 2.0 + sender.transit + late)
    after = sender.media_time(V, 2.0)
    if verdict is not None:
        assert after == before
    else:
        assert abs(after - before) <= 2 * SR_MAX_SKEW_S + late + 1e-6


def test_aiortc_before_media_then_hostile_reports_keep_the_truthful_mapping():
    sender = Sender({V: 5_000, A: 4_294_000_000})
    sender.clock.on_sender_report(V, 0, 0, sender.transit - 1.0)  # NTP 0 <-> RTP 0, before any frame
    sender.frames(V, 1.0)  # the pending report is checked on the first frame
    assert sender.clock.refused[Verdict.NTP_ZERO] == 1 and sender.clock.tracks[V].report is None
    assert sender.report(V, 1.0) is None
    truthful = sender.media_time(V, 1.0)
    now = 1.0 + sender.transit
    rtp = sender.rtp(V, 1.0) & 0xFFFFFFFF
    hostile = [(1 << 32, rtp), (0xFFFF0000 << 32, rtp), (ntp(WALL0 + 1.0), (rtp + 0x7FFF0000) & 0xFFFFFFFF)]
    verdicts = [sender.clock.on_sender_report(V, n, r, now) for n, r in hostile]
    assert verdicts == [Verdict.NTP_OFF_TRANSIT, Verdict.NTP_OFF_TRANSIT, Verdict.RTP_OFF_MEDIA]
    assert sender.media_time(V, 1.0) == truthful


def test_another_track_whose_clock_disagrees_is_refused_and_aligned_by_arrival():
    sender = Sender({V: 0, A: 0})
    sender.frames(V, 1.0)
    sender.frames(A, 1.0)
    assert sender.report(V, 1.0) is None
    year = 365 * 86400
    verdict = sender.clock.on_sender_report(A, ntp(WALL0 + 1.0 + year), sender.rtp(A, 1.0), 1.0 + sender.transit)
    assert verdict is Verdict.NTP_OFF_TRANSIT
    assert abs(sender.media_time(A, 0.5) - sender.media_time(V, 0.5)) < 0.05  # by the video's transit


def test_a_track_starting_far_from_the_others_is_placed_by_arrival():
    video = Timeline(90000, 90000, 0, 0, 90000, last_arrival=10.0)  # 1 s into the file at 10.0
    assert start_near(48000 * 1000, 48000, [video], 10.5, (9.0, 0.0)) == 48000 * 3 // 2  # not 1000 s in: 1.5 s
    assert start_near(48000 * 2, 48000, [video], 10.5, (9.0, 0.0)) == 48000 * 2  # within the bound: the clock's word


def test_the_first_track_of_a_file_starting_far_from_its_first_frame_is_placed_by_arrival():
    """No other track yet (audio from the GOP cache goes first): the frame the file began on anchors it."""
    assert start_near(-48000 * 9000, 48000, [], 12.0, (10.0, 3.0)) == 48000 * 5  # 3 s in at 10.0: 5 s at 12.0
    assert start_near(48000 * 4, 48000, [], 12.0, (10.0, 3.0)) == 48000 * 4


@given(jump=st.integers(-2**33, 2**33), gap=st.floats(0.0, 30.0))
def test_the_muxer_never_gets_a_pts_going_back_or_far_from_arrival(jump, gap):
    timeline = Timeline(90000, 90000, first_rtp=1000, first_pts=0, last_pts=0, last_arrival=5.0)
    pts = timeline.place(1000 + round(gap * 90000) + jump, 5.0 + gap)
    if pts is not None:
        assert pts > 0 and abs(pts - gap * 90000) <= PLACEMENT_BOUND_S * 90000 + 1
