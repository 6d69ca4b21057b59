"""Check recorded files the way a user would: open them with PyAV (FFmpeg),
decode every frame, and look for the flashes and beeps of ``testkit.media``
(``testkit.bitstream`` compares what files hold without decoding).

All times are the file's own presentation times in seconds
(``pts * time_base``), *not* shifted by the container's ``start_time``
(MPEG-TS files usually start near 1.4 s); compare times within one file, or use
``av_offsets``.

One decoding pass per file is cached (keyed by path, size and mtime), so
``decode_all``, ``flash_times``, ``beep_times`` and ``av_offsets`` on the same
file decode it once.  A file that changes on disk is decoded again.

FFmpeg log messages are captured while decoding: PyAV discards FFmpeg logs by
default (``av.logging.get_level() is None``), so the level is raised to WARNING
for the duration of the pass and an ``av.logging.Capture(local=False)`` collects
messages from every thread (frame-threaded decoders log from worker threads).
Messages at ERROR level or worse and decoding exceptions
(``av.error.FFmpegError``) end up in ``DecodeReport.errors``; WARNINGs in
``DecodeReport.warnings``.  The capture is process-global while it lasts.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from typing import Iterator

import av
import av.logging
import numpy as np

from testkit.media import BEEP_FREQ_HZ

# A flash is a frame whose mean luma is above the midpoint between the median
# frame and the brightest one; the brightest must stand out by this much.
MIN_FLASH_CONTRAST = 64.0
# A beep must reach this amplitude (full scale 1.0) to count.
MIN_BEEP_AMPLITUDE = 0.02
# Rising edges closer than this to the previous falling edge are one beep.
BEEP_MERGE_GAP_S = 0.030


@dataclass(frozen=True)
class DecodeReport:
    """What decoding every frame of every (first video / first audio) stream gave."""

    path: str
    format_name: str
    video_codec: str | None
    audio_codec: str | None
    width: int | None
    height: int | None
    video_frames: int
    audio_frames: int
    audio_samples: int  # per channel
    audio_rate: int | None
    audio_channels: int | None
    video_pts_s: tuple[float, ...]  # presentation order (sorted)
    audio_pts_s: tuple[float, ...]  # first-sample time of each decoded frame
    video_first_s: float | None
    video_last_s: float | None
    video_duration_s: float  # last - first + one frame duration
    audio_first_s: float | None
    audio_duration_s: float  # decoded samples / rate
    errors: tuple[str, ...]
    warnings: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class _Analysis:
    report: DecodeReport
    luma: tuple[tuple[float, float], ...]  # (pts_s, mean luma) sorted by pts
    audio_start_s: float | None  # time of audio_grid[0]
    audio_grid: np.ndarray  # mono float32 on a sample grid, gaps zero-filled


# --------------------------------------------------------------------------
# FFmpeg log capture


@contextlib.contextmanager
def capture_ffmpeg_logs(level: int = av.logging.WARNING) -> Iterator[list]:
    """Collect FFmpeg log records ``(level, name, message)`` from all threads.

    Temporarily enables PyAV's log callback at ``level`` and disables the
    suppression of repeated messages; restores both afterwards.
    """
    old_level = av.logging.get_level()
    old_skip = av.logging.get_skip_repeated()
    av.logging.set_level(level)
    av.logging.set_skip_repeated(False)
    try:
        with av.logging.Capture(local=False) as logs:
            yield logs
    finally:
        av.logging.set_level(old_level)
        av.logging.set_skip_repeated(old_skip)


def _format_log(record: tuple[int, str, str]) -> str:
    _level, name, message = record
    return f"[{name}] {message.strip()}"


# --------------------------------------------------------------------------
# Frame helpers


def _mean_luma(frame: av.VideoFrame) -> float:
    """Mean of the first (luma) plane of an 8-bit YUV frame."""
    plane = frame.planes[0]
    data = np.frombuffer(memoryview(plane), np.uint8)[: plane.line_size * plane.height]
    return float(data.reshape(plane.height, plane.line_size)[:, : plane.width].mean())


_INT_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 2.0**63}


def _mono_samples(frame: av.AudioFrame) -> np.ndarray:
    """Decoded audio frame as mono float32 in [-1, 1] (channel average)."""
    arr = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:
        arr = arr.reshape(-1, channels).T
    name = frame.format.name.rstrip("p")
    if name in _INT_SCALE:
        offset = 128.0 if name == "u8" else 0.0
        arr = (arr.astype(np.float64) - offset) / _INT_SCALE[name]
    return arr.mean(axis=0).astype(np.float32)


def _frame_time(frame: av.Frame, fallback: float | None) -> float | None:
    return float(frame.time) if frame.pts is not None else fallback


# --------------------------------------------------------------------------
# The decoding pass


class _Collector:
    """Accumulates decoded frames of one pass."""

    def __init__(self) -> None:
        self.luma: list[tuple[float, float]] = []
        self.audio: list[tuple[float, np.ndarray]] = []
        self.audio_samples = 0
        self.audio_rate: int | None = None
        self.audio_channels: int | None = None
        self.errors: list[str] = []
        self._next_audio_s: float | None = None
        self._last_video_s: float | None = None

    def add(self, frame: av.Frame) -> None:
        if isinstance(frame, av.VideoFrame):
            self._add_video(frame)
        elif isinstance(frame, av.AudioFrame):
            self._add_audio(frame)

    def _add_video(self, frame: av.VideoFrame) -> None:
        t = _frame_time(frame, self._last_video_s)
        if t is None:
            self.errors.append("video frame without pts")
            return
        self._last_video_s = t
        self.luma.append((t, _mean_luma(frame)))

    def _add_audio(self, frame: av.AudioFrame) -> None:
        t = _frame_time(frame, self._next_audio_s)
        if t is None:
            self.errors.append("audio frame without pts")
            t = 0.0
        self.audio_rate = frame.sample_rate
        self.audio_channels = len(frame.layout.channels)
        self.audio_samples += frame.samples
        self.audio.append((t, _mono_samples(frame)))
        self._next_audio_s = t + frame.samples / frame.sample_rate


def _decode_into(container: av.container.InputContainer, streams: list, out: _Collector) -> None:
    for packet in container.demux(streams):
        try:
            for frame in packet.decode():
                out.add(frame)
        except av.error.FFmpegError as exc:
            out.errors.append(f"decode {packet.stream.type}: {exc}")


def _audio_grid(
    chunks: list[tuple[float, np.ndarray]], rate: int | None
) -> tuple[float | None, np.ndarray]:
    """Place decoded audio chunks on one sample grid (gaps are zeros)."""
    if not chunks or not rate:
        return None, np.zeros(0, np.float32)
    chunks = sorted(chunks, key=lambda c: c[0])
    start = chunks[0][0]
    offsets = [round((t - start) * rate) for t, _ in chunks]
    grid = np.zeros(max(o + len(s) for o, (_, s) in zip(offsets, chunks)), np.float32)
    for offset, (_, samples) in zip(offsets, chunks):
        grid[offset : offset + len(samples)] = samples
    return start, grid


def _video_duration(pts: list[float], average_rate) -> float:
    if not pts:
        return 0.0
    if len(pts) > 1:
        frame_s = float(np.median(np.diff(pts)))
    elif average_rate:
        frame_s = 1.0 / float(average_rate)
    else:
        frame_s = 0.0
    return pts[-1] - pts[0] + frame_s


def _analyze_uncached(path: str) -> _Analysis:
    collector = _Collector()
    video = audio = video_rate = None
    format_name = ""
    with capture_ffmpeg_logs() as logs:
        try:
            with av.open(path) as container:
                format_name = container.format.name
                video = next(iter(container.streams.video), None)
                audio = next(iter(container.streams.audio), None)
                video_rate = video.average_rate if video is not None else None  # read while open
                streams = [s for s in (video, audio) if s is not None]
                _decode_into(container, streams, collector)
        except av.error.FFmpegError as exc:
            collector.errors.append(f"open/demux: {exc}")
    errors = [_format_log(r) for r in logs if r[0] <= av.logging.ERROR]
    warnings = [_format_log(r) for r in logs if r[0] > av.logging.ERROR]
    collector.luma.sort()
    video_pts = [t for t, _ in collector.luma]
    audio_start, grid = _audio_grid(collector.audio, collector.audio_rate)
    report = DecodeReport(
        path=path,
        format_name=format_name,
        video_codec=video.codec_context.name if video is not None else None,
        audio_codec=audio.codec_context.name if audio is not None else None,
        width=video.codec_context.width if video is not None else None,
        height=video.codec_context.height if video is not None else None,
        video_frames=len(video_pts),
        audio_frames=len(collector.audio),
        audio_samples=collector.audio_samples,
        audio_rate=collector.audio_rate,
        audio_channels=collector.audio_channels,
        video_pts_s=tuple(video_pts),
        audio_pts_s=tuple(t for t, _ in collector.audio),
        video_first_s=video_pts[0] if video_pts else None,
        video_last_s=video_pts[-1] if video_pts else None,
        video_duration_s=_video_duration(video_pts, video_rate),
        audio_first_s=min((t for t, _ in collector.audio), default=None),
        audio_duration_s=(
            collector.audio_samples / collector.audio_rate if collector.audio_rate else 0.0
        ),
        errors=tuple(collector.errors + errors),
        warnings=tuple(warnings),
    )
    grid.setflags(write=False)
    return _Analysis(report, tuple(collector.luma), audio_start, grid)


@functools.lru_cache(maxsize=4)
def _analyze_cached(path: str, _mtime_ns: int, _size: int) -> _Analysis:
    return _analyze_uncached(path)


def _analyze(path: str | os.PathLike) -> _Analysis:
    path = os.path.abspath(os.fspath(path))
    st = os.stat(path)
    return _analyze_cached(path, st.st_mtime_ns, st.st_size)


# --------------------------------------------------------------------------
# Public API


def decode_all(path: str | os.PathLike) -> DecodeReport:
    """Demux and decode every frame of the first video and first audio stream."""
    return _analyze(path).report


def flash_times(path: str | os.PathLike) -> list[float]:
    """Presentation times of the white flash frames (rising edges of mean luma)."""
    luma = _analyze(path).luma
    if not luma:
        return []
    means = np.array([m for _, m in luma])
    low, high = float(np.median(means)), float(means.max())
    if high - low < MIN_FLASH_CONTRAST:
        return []
    bright = means > (low + high) / 2
    return [
        luma[i][0] for i in range(len(luma)) if bright[i] and (i == 0 or not bright[i - 1])
    ]


def tone_envelope(samples: np.ndarray, rate: int, freq_hz: float = BEEP_FREQ_HZ) -> np.ndarray:
    """Amplitude of the ``freq_hz`` component around every sample.

    Quadrature demodulation followed by a centred moving average over one
    period (which cancels the 2f term): for a tone switched on at sample n0
    the envelope crosses half its amplitude at n0.
    """
    n = np.arange(len(samples))
    mixed = samples.astype(np.float64) * np.exp(-2j * np.pi * freq_hz * n / rate)
    width = max(2, round(rate / freq_hz))
    half = width // 2
    cumulative = np.concatenate(([0], np.cumsum(mixed)))
    hi = np.clip(n + (width - half), 0, len(samples))
    lo = np.clip(n - half, 0, len(samples))
    return 2 * np.abs((cumulative[hi] - cumulative[lo]) / width)


def _rising_edges(above: np.ndarray, merge_gap: int) -> list[int]:
    """Indices where ``above`` turns True, ignoring dips shorter than merge_gap."""
    change = np.diff(above.astype(np.int8), prepend=np.int8(0))
    rises = np.flatnonzero(change == 1)
    falls = np.flatnonzero(change == -1)
    edges = []
    for rise in rises:
        prior_falls = falls[falls < rise]
        if edges and prior_falls.size and rise - prior_falls[-1] < merge_gap:
            continue
        edges.append(int(rise))
    return edges


def detect_tone_onsets(
    samples: np.ndarray, rate: int, freq_hz: float = BEEP_FREQ_HZ
) -> list[float]:
    """Onsets (in samples, sub-sample interpolated) of a tone after silence."""
    env = tone_envelope(samples, rate, freq_hz)
    if env.size == 0 or env.max() < MIN_BEEP_AMPLITUDE:
        return []
    threshold = env.max() / 2
    onsets = []
    for n in _rising_edges(env >= threshold, round(BEEP_MERGE_GAP_S * rate)):
        if n == 0:
            onsets.append(0.0)
            continue
        before, after = env[n - 1], env[n]
        onsets.append(n - 1 + (threshold - before) / (after - before))
    return onsets


def beep_times(path: str | os.PathLike) -> list[float]:
    """Presentation times of the 1 kHz beep onsets, at (sub-)sample precision."""
    analysis = _analyze(path)
    rate = analysis.report.audio_rate
    if analysis.audio_start_s is None or not rate:
        return []
    return [
        analysis.audio_start_s + n / rate
        for n in detect_tone_onsets(analysis.audio_grid, rate)
    ]


def av_offsets(path: str | os.PathLike) -> list[float]:
    """For every flash, (nearest beep time - flash time) in seconds.

    Positive means audio late.  Empty if the file has no flashes or no beeps.
    """
    beeps = np.array(beep_times(path))
    if beeps.size == 0:
        return []
    return [float(beeps[np.argmin(np.abs(beeps - f))] - f) for f in flash_times(path)]
