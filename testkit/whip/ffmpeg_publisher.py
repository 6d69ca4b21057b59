"""The FFmpeg publisher: FFmpeg's own WebRTC stack through PyAV's ``whip`` muxer,
encoding the test pictures (libx264 High, no B-frames) and sound (libopus stereo) in
real time and recording every packet it muxes."""

from __future__ import annotations

import base64
import time
from fractions import Fraction

import av

from testkit.bitstream import split_annexb
from testkit.whip.spec import Manifest, PublisherSpec, pcm_s16, raw_media, write_manifest


def run_ffmpeg(spec: PublisherSpec) -> None:
    manifest = Manifest()
    media, pictures = raw_media(spec.video_frames / 30)
    try:
        options = {"handshake_timeout": "5000", **({"authorization": spec.token} if spec.token else {})}
        container = av.open(spec.url, "w", format="whip", options=options)
    except av.FFmpegError as error:
        manifest.error = str(error)
        write_manifest(manifest, spec.manifest)
        return
    video = audio = None
    if spec.video:
        video = container.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = media.width, media.height, "yuv420p"
        video.codec_context.options = {"profile": "high", "preset": "veryfast", "tune": "zerolatency",
                                       "x264-params": "bframes=0:keyint=30:min-keyint=30:scenecut=0"}
    if spec.audio:
        audio = container.add_stream("libopus", rate=48000, layout="stereo")
        audio.codec_context.options = {"frame_duration": "20"}
    pcm = pcm_s16(media.pcm, 2)
    audio_frames = spec.video_frames * 48000 // 30 // 960
    events = sorted([(i / 30, "v", i) for i in range(spec.video_frames if video else 0)]
                    + [(k * 0.02, "a", k) for k in range(audio_frames if audio else 0)])
    start = time.monotonic()

    def mux(packets, kind: str) -> None:
        for packet in packets:
            if kind == "v":
                manifest.video_aus.append([base64.b64encode(n).decode() for n in split_annexb(bytes(packet))])
            else:
                manifest.audio_packets.append(base64.b64encode(bytes(packet)).decode())
            container.mux(packet)

    try:
        for t, kind, index in events:
            time.sleep(max(0.0, start + t - time.monotonic()))
            if kind == "v":
                frame = av.VideoFrame.from_ndarray(pictures[index % len(pictures)].to_ndarray(), format="yuv420p")
                frame.pts = index
                frame.time_base = Fraction(1, 30)
                mux(video.encode(frame), "v")
            else:
                chunk = pcm[(index * 960) % max(960, len(pcm) - 960):][:960]
                frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="stereo")
                frame.sample_rate = 48000
                frame.pts = index * 960
                frame.time_base = Fraction(1, 48000)
                mux(audio.encode(frame), "a")
        if video is not None:
            mux(video.encode(None), "v")
        if audio is not None:
            mux(audio.encode(None), "a")
        time.sleep(spec.linger_s)
    except av.FFmpegError as error:
        manifest.error = str(error)
    write_manifest(manifest, spec.manifest)
    container.close()
