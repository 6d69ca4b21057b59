"""One track's packets -> EncodedFrames: the per-track path both inputs share.

An input (plain RTP, `workers.inputs.rtp`; WebRTC, `workers.inputs.webrtc`) owns one
`TrackPipe` per track, hands it the track's RTP packets (parsed, payload type checked,
RTX unwrapped: anything with `ssrc`, `sequence_number`, `timestamp`, `marker` and
`payload`) and RTCP packets (as parsed by aiortc), calls `tick()` on the worker's
timer, and gives it a way to send a key-frame request. The pipe does the rest:

- SSRC: the first RTP packet's SSRC is the track's (only the offer's, when it named one
  with a=ssrc); packets with another are counted (`foreign`) and dropped, until the
  latched SSRC has sent nothing for `source_silence_s` (contract.tuning.RTP_SOURCE_SILENCE_S,
  2 s): then the next one is followed
  (`ssrc_changes`; a publisher that restarted). Its timestamps are shifted to go on from
  the old ones by the time between them, so the worker's clock and open files go on as
  if one sender had paused; video then waits for a key frame. Sender Reports of SSRCs not
  (yet) followed (senders often report first) are kept (the latest per SSRC, at most
  MAX_EARLY_REPORTS SSRCs), and the one for the SSRC followed is delivered when it is
  followed. RTCP BYE from that SSRC sets `ended`.
- `workers.jitter.JitterBuffer` (reordering, duplicates, a hole waited for at most
  `max_wait`, then the broken frame dropped; where a video frame starts is the codec's
  call) and `workers.tracks.VideoTrack` / `AudioTrack` (depayloading per codec; after a
  loss, frames dropped until a clean key frame, one requested). `tick()` releases
  frames held behind a hole even when no packet arrives.
- Key frames: `request_keyframe()` (from the worker, or from VideoTrack after a loss)
  sends a request at once if it may, else as soon as it may: requests are at least
  KEYFRAME_REQUEST_MIN_INTERVAL_S apart and need the SSRC (the first packet).
  While no key frame has been delivered since, the request is repeated every
  KEYFRAME_REQUEST_RETRY_S: PLI / FIR travel over lossy UDP like everything else,
  and a publisher may otherwise send its next key frame only ~30 s later.
  The request itself is the input's business (`send_keyframe_request(ssrc, method)`,
  method "pli" or "fir").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import fields
from typing import Any

from aiortc.rtp import RtcpByePacket, RtcpSrPacket

from contract.codes import MediaKind
from contract.tuning import RTP_SOURCE_SILENCE_S
from contract.worker import TrackSpec
from workers.frames import AssembledFrame, EncodedFrame
from workers.inputs.base import FrameHandler, SenderReportHandler
from workers.jitter import JitterBuffer
from workers.tracks import AudioTrack, VideoTrack

KEYFRAME_REQUEST_MIN_INTERVAL_S = 0.5  # between two requests, whoever asks
KEYFRAME_REQUEST_RETRY_S = 1.0  # ask again while no key frame came
MAX_EARLY_REPORTS = 4

KeyframeRequestSender = Callable[[int, str], None]  # (media SSRC, "pli" | "fir")


class TrackPipe:
    """RTP and RTCP packets of one track in, EncodedFrames out (see the module docstring)."""

    def __init__(self, spec: TrackSpec, max_wait: float, on_frame: FrameHandler,
                 on_sender_report: SenderReportHandler, send_keyframe_request: KeyframeRequestSender,
                 keyframe_method: str = "pli", clock: Callable[[], float] = time.monotonic,
                 source_silence_s: float = RTP_SOURCE_SILENCE_S):
        self.spec = spec
        self.kind = spec.kind
        video = spec.kind is MediaKind.VIDEO
        self.track: VideoTrack | AudioTrack = VideoTrack(spec, self.request_keyframe) if video else AudioTrack(spec)
        self._max_wait = max_wait
        self._source_silence_s = source_silence_s
        self.jitter = self._new_jitter_buffer()
        self._on_frame = on_frame
        self._on_sender_report = on_sender_report
        self._send_request = send_keyframe_request
        self._method = keyframe_method
        self._clock = clock
        self.remote_ssrc: int | None = None
        self._early_reports: dict[int, tuple[int, int]] = {}
        self._last_request = float("-inf")
        self._want_keyframe = False  # asked for (by the worker or the loss gate), none delivered since
        self._asked = False  # a request for the current want went out
        self.ended = False  # the sender said BYE
        self.last_packet: float | None = None  # arrival of the latest packet of the track's SSRC
        self.max_release_delay_s = 0.0
        self.foreign = 0
        self.ssrc_changes = 0
        self._ts_offset = 0  # added to the followed SSRC's timestamps (after an SSRC change)
        self._last_frame: EncodedFrame | None = None
        self.sender_reports = 0
        self.requests_sent = {"pli": 0, "fir": 0}

    def push(self, packet: Any, arrival: float) -> None:
        """One RTP packet of this track (payload type checked) that arrived at `arrival`
        (time.monotonic()). The hot path: ~300 calls a second per video track."""
        if packet.ssrc != self.remote_ssrc:
            if not self._may_follow(packet.ssrc, arrival):
                self.foreign += 1
                return
            self._latch(packet.ssrc, packet.timestamp, arrival)
        self.last_packet = arrival
        frames = self.jitter.push(packet, arrival)
        if frames:
            self._release(frames, arrival)
        if self._want_keyframe:
            self._flush_request(arrival)

    def push_many(self, packets: list[Any], arrivals: list[float]) -> None:
        """A tick's packets of this track, in arrival order, with their arrival times: what
        `push` does for each, except that frames are released by the next `tick(now)`, once
        for the batch, rather than after every packet (`JitterBuffer.insert` says what that
        changes: nothing for packets in order). The caller calls `tick` right after."""
        jitter_insert = self.jitter.insert
        remote = self.remote_ssrc
        last = None
        for packet, arrival in zip(packets, arrivals):
            if packet.ssrc != remote:
                if last is not None:
                    self.last_packet = last
                if not self._may_follow(packet.ssrc, arrival):
                    self.foreign += 1
                    continue
                self._latch(packet.ssrc, packet.timestamp, arrival)
                remote, jitter_insert = self.remote_ssrc, self.jitter.insert
            last = arrival
            flushed = jitter_insert(packet, arrival)
            if flushed:
                self._release(flushed, arrival)
        if last is not None:
            self.last_packet = last

    def on_rtp(self, packet: Any) -> None:
        """`push` stamped now: for packets that come without an arrival time (aiortc)."""
        self.push(packet, self._clock())

    def on_rtcp(self, packet: Any) -> None:
        """One RTCP packet (aiortc's classes) from the track's sender; all but SR and BYE ignored."""
        if isinstance(packet, RtcpSrPacket):
            info = packet.sender_info
            if packet.ssrc == self.remote_ssrc:
                self._report(info.ntp_timestamp, info.rtp_timestamp)
            elif packet.ssrc in self._early_reports or len(self._early_reports) < MAX_EARLY_REPORTS:
                self._early_reports[packet.ssrc] = (info.ntp_timestamp, info.rtp_timestamp)  # the latest
        elif isinstance(packet, RtcpByePacket) and self.remote_ssrc in packet.sources:
            self.ended = True

    def tick(self, now: float) -> None:
        """On the worker's timer: release what waited long enough, send a due request."""
        frames = self.jitter.poll(now)
        if frames:
            self._release(frames, now)
        if self._want_keyframe:
            self._flush_request(now)

    def next_deadline(self) -> float | None:
        """When the jitter buffer next gives up a hole (`tick` must run then), or None."""
        return self.jitter.next_deadline()

    def request_keyframe(self) -> None:
        """Ask for a key frame now if allowed, else as soon as allowed (and the SSRC is known);
        repeated every KEYFRAME_REQUEST_RETRY_S until a key frame is delivered. Audio: no-op."""
        if self.kind is not MediaKind.VIDEO:
            return
        self._want_keyframe = True
        self._flush_request(self._clock())

    def _new_jitter_buffer(self) -> JitterBuffer:
        video = isinstance(self.track, VideoTrack)
        return JitterBuffer(frame_per_packet=not video, max_wait=self._max_wait,
                            starts_frame=self.track.codec.payload_starts_frame if video else None)

    def _may_follow(self, ssrc: int, arrival: float) -> bool:
        if self.spec.ssrc is not None and ssrc != self.spec.ssrc:
            return False
        return self.last_packet is None or arrival - self.last_packet >= self._source_silence_s

    def _latch(self, ssrc: int, timestamp: int, arrival: float) -> None:
        previous, self.remote_ssrc = self.remote_ssrc, ssrc
        if previous is not None:
            self._change_sender(timestamp, arrival)
        early = self._early_reports.pop(ssrc, None)
        self._early_reports.clear()
        if early is not None:
            self._report(*early)

    def _change_sender(self, timestamp: int, arrival: float) -> None:
        """Another SSRC takes the track over (see the module docstring); `timestamp` and
        `arrival` are its first packet's."""
        self.ssrc_changes += 1
        self._release(self.jitter.flush(), arrival)  # what the old sender left complete
        stats = self.jitter.stats
        self.jitter = self._new_jitter_buffer()  # a new sequence number space
        self.jitter.stats = stats
        last = self._last_frame
        if last is not None:  # the jitter buffer starts unwrapping at `timestamp` itself
            self._ts_offset = last.rtp_timestamp + round((arrival - last.arrival) * self.spec.clock_rate) - timestamp
        if isinstance(self.track, VideoTrack):
            self.track.reference_lost()

    def _report(self, ntp: int, rtp: int) -> None:
        self.sender_reports += 1
        self._on_sender_report(self.kind, ntp, (rtp + self._ts_offset) & 0xFFFFFFFF)

    def _release(self, frames: Iterable[AssembledFrame], now: float) -> None:
        for assembled in frames:
            delay = now - assembled.arrival
            if delay > self.max_release_delay_s:
                self.max_release_delay_s = delay
            frame = self.track.accept(assembled)
            if frame is None:
                continue
            if self._ts_offset:
                frame = EncodedFrame(frame.kind, frame.data, frame.rtp_timestamp + self._ts_offset, frame.arrival,
                                     frame.keyframe)
            self._last_frame = frame
            if frame.keyframe:
                self._want_keyframe = self._asked = False
            self._on_frame(frame)

    def _flush_request(self, now: float) -> None:
        if not self._want_keyframe or self.remote_ssrc is None:
            return
        wait = KEYFRAME_REQUEST_RETRY_S if self._asked else KEYFRAME_REQUEST_MIN_INTERVAL_S
        if now - self._last_request < wait:
            return
        self._asked = True
        self._last_request = now
        self.requests_sent[self._method] += 1
        self._send_request(self.remote_ssrc, self._method)

    def stats_dict(self) -> dict[str, float]:
        """What every input reports per track: `foreign`, `ssrc_changes`, `sender_reports`, key-frame
        requests sent (`pli`, `fir`), `jitter_*`, the gate's counters, `max_release_delay_s`."""
        result: dict[str, float] = {"foreign": self.foreign, "ssrc_changes": self.ssrc_changes,
                                    "sender_reports": self.sender_reports, **self.requests_sent}
        jitter = self.jitter.stats
        result.update({f"jitter_{f.name}": getattr(jitter, f.name) for f in fields(jitter)})
        gate = self.track.stats
        result.update({f.name: getattr(gate, f.name) for f in fields(gate)})
        result["max_release_delay_s"] = round(self.max_release_delay_s, 4)
        return result
