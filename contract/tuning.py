"""Media-plane defaults, named in one place. The engine hands them to every worker
in its WorkerConfig (`MediaTuning`); a worker reads them from there, never from engine/."""

from __future__ import annotations

from dataclasses import dataclass

JITTER_MAX_WAIT_S = 0.25  # a hole not repaired in this time drops its frame
SYNC_WAIT_FOR_SR_S = 1.5  # how long a worker waits for RTCP Sender Reports before opening a file
# Once one track has reported, the others' first reports are worth waiting for longer:
# browsers report audio every 5 s (libwebrtc's first audio report comes ~2.5 s after
# RTCP starts, video's after 0.5 s), so 1.5 s would record most browsers by arrival.
SYNC_WAIT_FOR_LATE_SR_S = 5.0
# A Sender Report is believed only if it agrees with the media it describes to within this:
# its RTP timestamp with the track's media at the report's arrival, its NTP time with the
# reports already believed (their transit). Lip sync needs tens of milliseconds; a
# publisher's audio may legitimately leave a few hundred ms after its picture.
SR_MAX_SKEW_S = 1.0
FRAGMENT_DURATION_US = 1_000_000  # fMP4 fragments / WebM clusters / FLV interleave: at most this long
PROGRESS_INTERVAL_S = 1.0  # FileProgress events
GOP_CACHE_MAX_S = 10.0  # how much of the current GOP a worker keeps for a task that starts mid-GOP
# A plain-RTP track follows a new source (address or SSRC) only once the one it follows has
# sent no media for this long: a stray or hostile sender cannot take a live stream over,
# and a publisher that restarts (new port, new SSRC) is followed within seconds.
RTP_SOURCE_SILENCE_S = 2.0


@dataclass(frozen=True, slots=True)
class MediaTuning:
    jitter_max_wait_s: float = JITTER_MAX_WAIT_S
    sync_wait_for_sr_s: float = SYNC_WAIT_FOR_SR_S
    sync_wait_for_late_sr_s: float = SYNC_WAIT_FOR_LATE_SR_S
    sr_max_skew_s: float = SR_MAX_SKEW_S
    fragment_duration_us: int = FRAGMENT_DURATION_US
    progress_interval_s: float = PROGRESS_INTERVAL_S
    gop_cache_max_s: float = GOP_CACHE_MAX_S
    rtp_source_silence_s: float = RTP_SOURCE_SILENCE_S
