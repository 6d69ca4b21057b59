"""How a stream's audio track is written: its AudioParams, how long a packet lasts, and a
packet of silence (FillBlank fills the time a stream was away with it)."""

from __future__ import annotations

from contract.worker import TrackSpec
from workers.codecs import aac, opus
from workers.outputs.params import AudioParams

# A 20 ms Opus packet (CELT, fullband, mono) that decodes to silence.
OPUS_SILENCE = bytes([0xF8, 0xFF, 0xFE])
OPUS_SILENCE_SAMPLES = 960


def audio_params(spec: TrackSpec) -> AudioParams:
    """How a stream's audio track is written: AAC-LC as it comes (its AudioSpecificConfig
    from the track's `config`), else Opus (with an OpusHead: pre-skip 0, RTP carries none)."""
    if spec.codec.lower() == "aac":
        return AudioParams("aac", spec.clock_rate, spec.channels, bytes.fromhex(spec.fmtp_value("config") or ""))
    return AudioParams("opus", opus.SAMPLE_RATE, spec.channels, opus.opus_head(spec.channels))


def packet_samples(audio: AudioParams, packet: bytes) -> int:
    return aac.FRAME_SAMPLES if audio.codec == "aac" else opus.packet_samples(packet)


def silence_packet(audio: AudioParams) -> tuple[bytes, int]:
    """One packet that decodes to silence and how many samples it lasts."""
    if audio.codec == "aac":
        return aac.silent_frame(audio.sample_rate, audio.channels), aac.FRAME_SAMPLES
    return OPUS_SILENCE, OPUS_SILENCE_SAMPLES
