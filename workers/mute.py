"""RecordMuteAudio 2 (mp3 tasks): muted audio is left out of the file; with
RecordMuteAudioSplitThreshold, a mute that lasts that long ends the file, and the
next sound starts a new one (0: every mute does).

Muted is what a muted microphone sends: packets that decode to (near) digital
silence, or no packets at all. A packet is sound when its decoded peak reaches
MUTE_PEAK_DBFS; after the last sound, audio missing for MISSING_AUDIO_S counts as
mute from where that sound ended. Only used for these tasks, so its own decoder (of the
stream's Opus, or AAC) costs nothing elsewhere.
"""

from __future__ import annotations

import av
import numpy as np

from workers.codecs import aac
from workers.frames import EncodedFrame
from workers.outputs.audio import packet_samples
from workers.outputs.params import AudioParams

# Far below speech and a quiet room's noise through an open microphone; what Opus
# decodes from digital silence (the decoder rings down from the last sound at ~3 dB
# a packet, so a packet or two after a sound still counts as sound).
MUTE_PEAK_DBFS = -60.0
MUTE_PEAK = 10 ** (MUTE_PEAK_DBFS / 20)
MISSING_AUDIO_S = 0.2  # no packet this long: the publisher sends nothing while muted (DTX, a stopped track)


class MuteGate:
    def __init__(self, audio: AudioParams, split_after_s: int | None):
        self._audio = audio
        self._decoder = aac.decoder_for(audio.codec, audio.sample_rate, audio.channels, audio.extradata)
        self._split_after_s = split_after_s
        self._mute_since: float | None = None  # arrival of the first muted packet after a sound
        self._sound_end: float | None = None  # when the last sound ended (arrival time)
        self._last: tuple[EncodedFrame, bool] | None = None
        self.after_mute = False  # the last sound came after a mute (muted packets, or none for a while)

    def is_sound(self, frame: EncodedFrame) -> bool:
        """Whether the audio packet `frame` carries sound (asked again of the same frame: the same answer)."""
        if self._last is not None and self._last[0] is frame:
            return self._last[1]
        try:
            decoded = self._decoder.decode(av.Packet(frame.data))
        except av.FFmpegError:
            decoded = []
        sound = any(np.abs(f.to_ndarray()).max() >= MUTE_PEAK for f in decoded)
        if sound:
            self.after_mute = self._mute_since is not None or (
                self._sound_end is not None and frame.arrival - self._sound_end >= MISSING_AUDIO_S)
            self._mute_since = None
            self._sound_end = frame.arrival + packet_samples(self._audio, frame.data) / self._audio.sample_rate
        elif self._mute_since is None:
            self._mute_since = frame.arrival
        self._last = (frame, sound)
        return sound

    def muted_for(self, now: float) -> float | None:
        """Seconds of mute up to `now`, None while sounding (or before any sound)."""
        if self._mute_since is not None and self._sound_end is not None:
            return max(0.0, now - self._mute_since)
        if self._sound_end is not None and now - self._sound_end >= MISSING_AUDIO_S:
            return now - self._sound_end
        return None

    def split_due(self, now: float) -> bool:
        if self._split_after_s is None:
            return False
        muted = self.muted_for(now)
        return muted is not None and muted >= self._split_after_s
