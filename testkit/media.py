"""Synthetic, deterministic test media: H.264 video that flashes white exactly
when the Opus audio beeps.

``make_test_media()`` encodes, with the real libx264 / libopus encoders of
PyAV, a short clip that end-to-end tests publish over RTP and later look for in
recordings (see ``testkit.probe``):

Video
    libx264, constrained baseline, ``tune=zerolatency``, level 3.1,
    ``repeat-headers=1:keyint=N:scenecut=0``: SPS/PPS in front of every IDR, an
    IDR exactly every ``keyint`` frames, no B-frames, one access unit per input
    frame, in order.  Frame ``i`` is captured at ``t = i / fps``.  Frames are
    dark (luma 32) with a moving grey square; at every flash time exactly one
    frame is entirely white (luma 235).

Audio
    libopus, 48 kHz **mono**, 20 ms frames (960 samples), CBR-ish default
    bit rate, no DTX.  Digital silence except a 1 kHz sine beep (amplitude 0.5,
    60 ms, starting at phase 0) starting on the exact sample of each flash time.
    ``TestMedia.pcm`` is the float32 PCM that was fed to the encoder.

Timing convention for Opus (important): the encoder has a look-ahead of
``pre_skip`` samples (312 at 48 kHz, also written in the OpusHead).  Packet
``k`` decodes to input samples starting at ``k * 960 - pre_skip``; this is the
packet's ``time_s`` ("capture time of its first decoded sample") and it is the
pts FFmpeg's encoder gives it.  So ``audio[0].time_s`` is -6.5 ms.  Putting each
packet at ``time_s`` (and each video AU at its ``time_s``) on a common timeline
gives sample-exact A/V sync whether or not the decoder drops the pre-skip
samples (FFmpeg moves the pts forward by what it drops).  The RTP publisher
derives RTP timestamps from these ``time_s`` values.

The encoder also flushes one extra packet at the end (covering the last
``pre_skip`` samples), so ``len(audio) == ceil((len(pcm) + pre_skip) / 960)``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import os
import pickle
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from testkit.bitstream import NAL_PPS, NAL_SPS, nal_type, opus_pre_skip, split_annexb

CACHE_DIR = Path(tempfile.gettempdir()) / "recnode-test-media"  # encoded clips kept across processes
AUDIO_RATE = 48_000
AUDIO_FRAME_SAMPLES = 960  # 20 ms
BEEP_FREQ_HZ = 1000.0
BEEP_DURATION_S = 0.060
BEEP_AMPLITUDE = 0.5

LUMA_DARK = 32
LUMA_SQUARE = 96
LUMA_WHITE = 235
CHROMA_NEUTRAL = 128
SQUARE_SIZE = 40
TEXTURE_BLOCK = 4
TEXTURE_SPREAD = 16



@dataclass(frozen=True)
class VideoAU:
    """One encoded video frame (access unit)."""

    index: int
    time_s: float  # capture time = index / fps
    data: bytes  # exactly as the encoder produced it (H.264: Annex-B; VP8: the frame)
    keyframe: bool


@dataclass(frozen=True)
class AudioPacket:
    """One Opus packet (20 ms)."""

    index: int
    time_s: float  # capture time of its first decoded sample (see module doc)
    data: bytes
    samples: int  # 960


@dataclass(frozen=True, eq=False)
class TestMedia:
    """Encoded clip plus everything a test needs to check a recording of it.

    ``eq=False``: instances compare by identity (``pcm`` is a numpy array);
    ``make_test_media`` caches, so equal arguments give the same object.
    """

    __test__ = False  # not a pytest test class despite the name

    video: tuple[VideoAU, ...]
    audio: tuple[AudioPacket, ...]
    opus_head: bytes  # encoder extradata ("OpusHead..." 19 bytes)
    pre_skip: int  # Opus encoder delay in 48 kHz samples (from opus_head)
    sps: bytes  # NAL unit without start code
    pps: bytes  # NAL unit without start code
    flash_times: tuple[float, ...]  # seconds; multiples of 1/fps
    flash_frames: tuple[int, ...]  # video frame index of each flash
    beep_samples: tuple[int, ...]  # pcm sample index where each beep starts
    pcm: np.ndarray  # float32, mono, AUDIO_RATE, exactly what was encoded
    fps: int
    width: int
    height: int
    duration_s: float
    keyint: int
    audio_rate: int = AUDIO_RATE
    audio_channels: int = 1

    @property
    def video_time_base(self) -> Fraction:
        return Fraction(1, self.fps)

    def audio_pts(self, packet: AudioPacket) -> int:
        """Packet pts in 1/48000 units (may be negative for the first one)."""
        return round(packet.time_s * self.audio_rate)


def _flash_frame_indices(
    duration_s: float, fps: int, flash_period_s: float, flash_offset_s: float
) -> tuple[int, ...]:
    """Frame indices of the flashes, flash times rounded onto the frame grid."""
    n_frames = round(duration_s * fps)
    indices = []
    k = 0
    while True:
        index = round((flash_offset_s + k * flash_period_s) * fps)
        if index >= n_frames:
            break
        if index >= 0 and (not indices or index > indices[-1]):
            indices.append(index)
        k += 1
    return tuple(indices)


@functools.lru_cache(maxsize=4)
def _texture(width: int, height: int) -> np.ndarray:
    """Fixed dark block-noise luma (mean ~LUMA_DARK): makes key frames big
    enough to need FU-A fragmentation."""
    rng = np.random.default_rng(20240601)
    blocks = rng.integers(
        LUMA_DARK - TEXTURE_SPREAD,
        LUMA_DARK + TEXTURE_SPREAD + 1,
        size=(-(-height // TEXTURE_BLOCK), -(-width // TEXTURE_BLOCK)),
        dtype=np.uint8,
    )
    big = np.kron(blocks, np.ones((TEXTURE_BLOCK, TEXTURE_BLOCK), np.uint8))
    return big[:height, :width]


def _video_plane(index: int, width: int, height: int, white: bool, busy: bool = False) -> np.ndarray:
    """yuv420p picture as the (height * 3/2, width) array PyAV expects. `busy`
    adds fresh noise to every frame so the encoder needs its whole bitrate."""
    frame = np.full((height * 3 // 2, width), CHROMA_NEUTRAL, dtype=np.uint8)
    luma = frame[:height]
    if white:
        luma[:] = LUMA_WHITE
        return frame
    luma[:] = _texture(width, height)
    if busy:
        noise = np.random.default_rng(index).integers(0, 48, size=(height, width), dtype=np.uint8)
        luma += noise
    size = min(SQUARE_SIZE, width, height)
    x = (index * 4) % max(1, width - size)
    y = (index * 3) % max(1, height - size)
    luma[y : y + size, x : x + size] = LUMA_SQUARE
    return frame


def _encode_video(
    n_frames: int,
    fps: int,
    keyint: int,
    width: int,
    height: int,
    flash_frames: frozenset[int],
    bitrate_kbps: int = 0,
    codec: str = "h264",
) -> tuple[VideoAU, ...]:
    ctx = av.CodecContext.create("libvpx" if codec == "vp8" else "libx264", "w")
    ctx.width = width
    ctx.height = height
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = Fraction(1, fps)
    ctx.framerate = Fraction(fps, 1)
    ctx.thread_count = 1  # bit-exact across processes
    if codec == "vp8":  # as WebRTC sends it: real time, no lag, a key frame every keyint frames
        ctx.gop_size = keyint
        ctx.bit_rate = 500_000
        ctx.options = {"deadline": "realtime", "lag-in-frames": "0", "keyint_min": str(keyint)}
    else:
        ctx.options = {
            "profile": "baseline",
            "tune": "zerolatency",
            "level": "31",
            "x264-params": f"repeat-headers=1:keyint={keyint}:min-keyint={keyint}:scenecut=0",
        }
    if bitrate_kbps:
        ctx.options = {**ctx.options, "preset": "ultrafast", "level": "41",
                       "x264-params": ctx.options["x264-params"] +
                       f":bitrate={bitrate_kbps}:vbv-maxrate={bitrate_kbps}:vbv-bufsize={bitrate_kbps}"}
    packets: list[av.Packet] = []
    for i in range(n_frames):
        frame = av.VideoFrame.from_ndarray(
            _video_plane(i, width, height, i in flash_frames, busy=bool(bitrate_kbps)), format="yuv420p"
        )
        frame.pts = i
        packets.extend(ctx.encode(frame))
    packets.extend(ctx.encode(None))
    if len(packets) != n_frames:
        raise RuntimeError(f"{codec} gave {len(packets)} packets for {n_frames} frames")
    return tuple(
        VideoAU(index=i, time_s=i / fps, data=bytes(p), keyframe=bool(p.is_keyframe))
        for i, p in enumerate(packets)
    )


def _make_pcm(n_samples: int, beep_samples: tuple[int, ...]) -> np.ndarray:
    pcm = np.zeros(n_samples, dtype=np.float32)
    beep_len = round(BEEP_DURATION_S * AUDIO_RATE)
    tone = BEEP_AMPLITUDE * np.sin(
        2 * np.pi * BEEP_FREQ_HZ * np.arange(beep_len) / AUDIO_RATE
    )
    for start in beep_samples:
        end = min(n_samples, start + beep_len)
        pcm[start:end] = tone[: end - start]
    return pcm


def _encode_audio(pcm: np.ndarray) -> tuple[tuple[AudioPacket, ...], bytes]:
    """Encode mono float PCM with libopus; returns (packets, OpusHead)."""
    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate = AUDIO_RATE
    ctx.layout = "mono"
    ctx.format = "flt"
    ctx.time_base = Fraction(1, AUDIO_RATE)
    ctx.bit_rate = 64_000
    ctx.options = {"frame_duration": "20", "application": "audio", "dtx": "0"}
    ctx.open()
    padded = np.zeros(
        math.ceil(len(pcm) / AUDIO_FRAME_SAMPLES) * AUDIO_FRAME_SAMPLES, np.float32
    )
    padded[: len(pcm)] = pcm
    packets: list[av.Packet] = []
    for k, start in enumerate(range(0, len(pcm), AUDIO_FRAME_SAMPLES)):
        chunk = padded[start : start + AUDIO_FRAME_SAMPLES]
        frame = av.AudioFrame.from_ndarray(chunk[None, :], format="flt", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = start
        frame.time_base = ctx.time_base
        packets.extend(ctx.encode(frame))
    packets.extend(ctx.encode(None))
    audio = tuple(
        AudioPacket(
            index=k,
            time_s=p.pts / AUDIO_RATE,
            data=bytes(p),
            samples=AUDIO_FRAME_SAMPLES,
        )
        for k, p in enumerate(packets)
    )
    return audio, bytes(ctx.extradata)


def _parameter_sets(first_au: bytes) -> tuple[bytes, bytes]:
    nals = split_annexb(first_au)
    sps = next(n for n in nals if nal_type(n) == NAL_SPS)
    pps = next(n for n in nals if nal_type(n) == NAL_PPS)
    return sps, pps


def _video_cached_on_disk(name: str, make) -> tuple[VideoAU, ...]:
    """Encoded video kept across processes. The file holds plain tuples, not VideoAU
    objects, so it does not depend on where this module lives: checkouts of other
    versions share the folder."""
    CACHE_DIR.mkdir(exist_ok=True)
    path = CACHE_DIR / ("plain-" + hashlib.sha256(name.encode()).hexdigest()[:24] + ".pkl")
    if path.exists():
        return tuple(VideoAU(*fields) for fields in pickle.loads(path.read_bytes()))
    video = make()
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_bytes(pickle.dumps([dataclasses.astuple(au) for au in video]))
    os.replace(temporary, path)
    return video


@functools.lru_cache(maxsize=16)
def make_test_media(
    duration_s: float = 6.0,
    fps: int = 30,
    keyint: int = 30,
    width: int = 320,
    height: int = 240,
    flash_period_s: float = 1.0,
    flash_offset_s: float = 0.5,
    bitrate_kbps: int = 0,
    switch_to: tuple[int, int] | None = None,
    switch_at_s: float = 0.0,
    video_codec: str = "h264",
) -> TestMedia:
    """Encode (once per argument set, cached) the synthetic A/V test clip.

    ``video_codec="vp8"`` encodes the same pictures with libvpx (real time, a key frame
    every ``keyint`` frames); ``sps`` and ``pps`` are then empty.

    ``switch_to`` = (width, height): from ``switch_at_s`` (a key-frame time) on, the
    video is encoded again at that size (new SPS), as a browser does under load.

    ``bitrate_kbps`` > 0 makes every frame busy and encodes at that bitrate (for
    upload tests that need real volume); such clips are also cached on disk, since
    the publisher process needs the same clip again.

    ``fps`` must divide 48000 so that every frame time is a whole audio
    sample.  Flash times are ``flash_offset_s + k * flash_period_s`` rounded
    to the frame grid, for every one that falls before ``duration_s``.
    """
    if AUDIO_RATE % fps:
        raise ValueError("fps must divide 48000 (flash times must be whole samples)")
    n_frames = round(duration_s * fps)
    flash_frames = _flash_frame_indices(duration_s, fps, flash_period_s, flash_offset_s)
    samples_per_frame = AUDIO_RATE // fps
    beep_samples = tuple(i * samples_per_frame for i in flash_frames)
    pcm = _make_pcm(n_frames * samples_per_frame, beep_samples)
    pcm.setflags(write=False)
    if bitrate_kbps:
        video = _video_cached_on_disk(
            f"video-{n_frames}-{fps}-{keyint}-{width}x{height}-{bitrate_kbps}-{sorted(flash_frames)}",
            lambda: _encode_video(n_frames, fps, keyint, width, height, frozenset(flash_frames), bitrate_kbps))
    elif switch_to is not None:
        cut = round(switch_at_s * fps)
        if cut % keyint:
            raise ValueError("switch_at_s must fall on a key frame")
        first = _encode_video(cut, fps, keyint, width, height, frozenset(f for f in flash_frames if f < cut),
                              codec=video_codec)
        second = _encode_video(n_frames - cut, fps, keyint, *switch_to,
                               frozenset(f - cut for f in flash_frames if f >= cut), codec=video_codec)
        video = first + tuple(dataclasses.replace(au, index=au.index + cut, time_s=(au.index + cut) / fps)
                              for au in second)
    else:
        video = _encode_video(n_frames, fps, keyint, width, height, frozenset(flash_frames), codec=video_codec)
    audio, opus_head = _encode_audio(pcm)
    sps, pps = _parameter_sets(video[0].data) if video_codec == "h264" else (b"", b"")
    return TestMedia(
        video=video,
        audio=audio,
        opus_head=opus_head,
        pre_skip=opus_pre_skip(opus_head),
        sps=sps,
        pps=pps,
        flash_times=tuple(i / fps for i in flash_frames),
        flash_frames=flash_frames,
        beep_samples=beep_samples,
        pcm=pcm,
        fps=fps,
        width=width,
        height=height,
        duration_s=n_frames / fps,
        keyint=keyint,
    )
