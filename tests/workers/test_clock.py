import pytest

from contract.codes import MediaKind
from workers.clock import NTP_EPOCH_OFFSET, Basis, StreamClock, TrackClock, ntp_to_seconds

V, A = MediaKind.VIDEO, MediaKind.AUDIO


def ntp(seconds: float) -> int:
    whole = int(seconds)
    return ((whole + NTP_EPOCH_OFFSET) << 32) | int((seconds - whole) * 2**32)


def test_ntp_conversion():
    assert abs(ntp_to_seconds(ntp(1700000000.25)) - 1700000000.25) < 1e-6


def test_sender_reports_align_tracks_despite_delivery_delay():
    clock = StreamClock({V: 90000, A: 48000}, sync_wait_s=1.5)
    capture0 = 1700000000.0
    v_base, a_base = 1_000_000, 4_000_000_000
    # audio delivered 200 ms later than video
    clock.tracks[V].on_frame(v_base, arrival=10.0)
    clock.tracks[A].on_frame(a_base, arrival=10.2)
    assert not clock.settled(10.3)
    clock.tracks[V].on_sender_report(ntp(capture0), v_base)
    clock.tracks[A].on_sender_report(ntp(capture0), a_base)
    assert clock.settled(10.3) and clock.basis() is Basis.SENDER
    t_video = clock.media_time(V, v_base + 90000, Basis.SENDER)
    t_audio = clock.media_time(A, a_base + 48000, Basis.SENDER)
    assert abs(t_video - t_audio) < 1e-6
    # arrival basis keeps the delivery delay: that is all it can know
    t_video = clock.media_time(V, v_base, Basis.ARRIVAL)
    t_audio = clock.media_time(A, a_base, Basis.ARRIVAL)
    assert abs((t_audio - t_video) - 0.2) < 1e-6


def test_settles_after_wait_without_reports():
    clock = StreamClock({V: 90000, A: 48000}, sync_wait_s=1.5)
    clock.tracks[V].on_frame(0, arrival=5.0)
    assert not clock.settled(6.0)
    assert clock.settled(6.5) and clock.basis() is Basis.ARRIVAL


def test_sr_timestamp_unwraps_next_to_packets():
    track = TrackClock(90000)
    track.on_frame(2**32 + 100, arrival=0.0)
    track.on_sender_report(ntp(50.0), 2**32 - 100 & 0xFFFFFFFF)
    assert track.report.rtp == 2**32 - 100


def test_arrival_anchor_is_the_least_delayed_frame():
    track = TrackClock(90000)
    track.on_frame(0, arrival=1.05)  # late first packet
    track.on_frame(9000, arrival=1.10)
    assert abs(track.arrival_time(0) - 1.0) < 1e-9


def test_track_without_report_borrows_transit_from_one_with():
    clock = StreamClock({V: 90000, A: 48000}, sync_wait_s=1.5)
    clock.tracks[V].on_frame(0, arrival=10.0)
    clock.tracks[V].on_sender_report(ntp(100.0), 0)  # transit 10.0 - 100.0 on this clock pairing
    clock.tracks[A].on_frame(0, arrival=10.5)
    assert abs(clock.media_time(A, 0, Basis.SENDER) - 100.5) < 1e-6


@pytest.mark.parametrize("rate", [0, -90000])
def test_a_clock_rate_that_is_not_positive_is_refused_up_front(rate):
    with pytest.raises(ValueError, match="must be positive"):
        TrackClock(rate)  # rather than a ZeroDivisionError on every frame


def test_a_publisher_that_reports_one_track_is_awaited_for_the_others_reports():
    """A browser's first audio report comes seconds after its video's (libwebrtc: 2.5 s, then
    every 5 s): once a track has reported, the wait for the rest is the longer one, so the
    file is placed by the reports rather than by arrival."""
    clock = StreamClock({V: 90000, A: 48000}, sync_wait_s=1.5, late_wait_s=5.0)
    clock.on_frame(V, 0, arrival=10.0)
    clock.on_frame(A, 0, arrival=10.2)
    assert clock.on_sender_report(V, ntp(1700000000.5), 45000, arrival=10.5) is None
    assert not clock.settled(11.6) and not clock.settled(14.9)
    clock.on_frame(A, 120000, arrival=12.7)
    assert clock.on_sender_report(A, ntp(1700000002.5), 120000, arrival=12.7) is None
    assert clock.settled(12.7) and clock.basis() is Basis.SENDER


def test_the_longer_wait_also_ends():
    clock = StreamClock({V: 90000, A: 48000}, sync_wait_s=1.5, late_wait_s=5.0)
    clock.on_frame(V, 0, arrival=10.0)
    clock.on_frame(A, 0, arrival=10.2)
    clock.on_sender_report(V, ntp(1700000000.5), 45000, arrival=10.5)
    assert not clock.settled(14.9) and clock.settled(15.0) and clock.basis() is Basis.ARRIVAL
