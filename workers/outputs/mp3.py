"""`.mp3`: the stream's audio, Opus decoded and encoded as MP3 (libmp3lame, constant
bit rate). Written front to back, so there is no Xing/LAME header (it is written
last, into the front): players take the length from the constant bit rate.

Without that header FFmpeg (and so ffprobe, and players built on it) recognizes an
MP3 by 7 frames in a row; a shorter file (a cough between two mutes split into a
file of its own, RecordMuteAudioSplitThreshold) is padded with silence to 8."""

from __future__ import annotations

from workers.outputs.base import SingleObjectWriter
from workers.outputs.transcode import MP3


class Mp3Writer(SingleObjectWriter):
    extension = "mp3"
    output_format = "mp3"
    video_codecs = ()
    container_format = "mp3"
    audio_encoder = MP3
    min_audio_samples = 8 * MP3.frame_samples  # 0.19 s
