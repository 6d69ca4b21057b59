"""The frames a recording that starts now should begin with.

Video is kept from the latest key frame on, so a task that starts mid-GOP begins
at that key frame instead of waiting for the next one. While a recording is
still pending (its clock not settled yet), older GOPs are held too, so it starts
at the first key frame after it was asked for. Audio is kept a little longer
than video, since it may arrive later than the video captured with it.
"""

from __future__ import annotations

from collections import deque

from contract.codes import MediaKind
from contract.tuning import GOP_CACHE_MAX_S
from workers.frames import EncodedFrame

AUDIO_LEAD_S = 1.0


class GopCache:
    def __init__(self, has_video: bool, max_s: float = GOP_CACHE_MAX_S, audio_lead_s: float = AUDIO_LEAD_S):
        self._has_video = has_video
        self._max_s = max_s
        self._audio_lead_s = audio_lead_s
        self._frames: deque[EncodedFrame] = deque()
        self._first_keyframe: EncodedFrame | None = None
        self._latest_keyframe: EncodedFrame | None = None

    def add(self, frame: EncodedFrame, hold: bool = False) -> None:
        """Keep `frame`; with `hold`, older GOPs are not dropped (up to max_s)."""
        if not self._has_video:
            return  # an audio-only recording starts with the next packet
        if frame.kind is MediaKind.VIDEO and frame.keyframe:
            self._latest_keyframe = frame
            if self._first_keyframe is None or not hold:
                self._restart_at(frame)
        if self._first_keyframe is None:
            if frame.kind is MediaKind.AUDIO:
                self._frames.append(frame)
                self._trim_audio(frame.arrival)
            return
        self._frames.append(frame)
        if frame.arrival - self._first_keyframe.arrival > self._max_s:
            latest = self._latest_keyframe
            if latest is not None and latest is not self._first_keyframe and frame.arrival - latest.arrival <= self._max_s:
                self._restart_at(latest)
            else:
                # A GOP longer than the cache allows: forget it; a recording
                # that starts now asks for a fresh key frame instead.
                self._first_keyframe = self._latest_keyframe = None
                self._frames = deque(f for f in self._frames if f.kind is MediaKind.AUDIO)
                self._trim_audio(frame.arrival)

    def _restart_at(self, keyframe: EncodedFrame) -> None:
        horizon = keyframe.arrival - self._audio_lead_s
        index = next((i for i, f in enumerate(self._frames) if f is keyframe), len(self._frames))
        before = [f for f in list(self._frames)[:index] if f.kind is MediaKind.AUDIO and f.arrival >= horizon]
        self._frames = deque(before + list(self._frames)[index:])
        self._first_keyframe = keyframe

    def _trim_audio(self, now: float) -> None:
        while self._frames and self._frames[0].arrival < now - self._audio_lead_s:
            self._frames.popleft()

    @property
    def has_keyframe(self) -> bool:
        return self._first_keyframe is not None

    def frames(self) -> list[EncodedFrame]:
        """From the first kept key frame on (audio: from a little before it)."""
        return list(self._frames) if self._first_keyframe is not None else []
