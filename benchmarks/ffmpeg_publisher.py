"""A plain-RTP publisher that is not ours: Debian's `ffmpeg` sending the benchmark clip.

    python -m benchmarks.ffmpeg_publisher '{"command": [...], "start_time": <wall>,
                                            "frames": <clip.ts.frames.json>, "manifest": <path>}'

The clip (`ensure_clip`, once, cached beside testkit.media's cache): the stream's
`make_test_media` H.264 (SPS/PPS before every IDR) and mono Opus, muxed in time order
into MPEG-TS (parameter sets in-band: from MP4 or Matroska FFmpeg would put them only
into its own SDP). Beside it, `<clip>.frames.json`: every frame's capture time (0 = the
first video frame). At `spec.start_time` the process runs

    ffmpeg -re -i clip.ts -map 0:v -c copy -payload_type 96 -ssrc S -f rtp rtp://H:P?rtcpport=R&pkt_size=1200
                          -map 0:a -c copy -payload_type 111 -ssrc S -f rtp rtp://H:P?rtcpport=R&pkt_size=1200

(one RTP muxer per track, to the ports the node answered, with FFmpeg's own RTCP
Sender Reports), waits for it, and writes its manifest in `whip_publisher`'s format.
FFmpeg does not say when it sent a frame: a frame counts as sent at its capture time
after FFmpeg was started (`-re` paces from there), so the manifest's lateness is how
late FFmpeg started; `completed` is FFmpeg's exit status 0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

CLIP_OFFSET = Fraction(1)  # MPEG-TS wants no negative timestamps (Opus starts 6.5 ms before video)
PACKET_SIZE = 1200


def ensure_clip(spec) -> Path:
    """The MPEG-TS clip of a testkit.rtp PublisherSpec's media (and its frame list)."""
    import av

    from testkit.media import CACHE_DIR

    media = spec.media()
    path = CACHE_DIR / f"ffmpeg-rtp-{media_digest(media)}.ts"
    frames_path = Path(f"{path}.frames.json")
    if path.exists() and frames_path.exists():
        return path
    CACHE_DIR.mkdir(exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    origin = Fraction(media.video[0].index, media.fps)
    events = [(Fraction(au.index, media.fps), "video", au) for au in media.video]
    events += [(Fraction(round(p.time_s * 48000), 48000), "audio", p) for p in media.audio]
    events.sort(key=lambda e: (e[0], e[1] == "audio"))
    with av.open(str(temporary), "w", format="mpegts") as out:
        video = out.add_mux_stream("h264", rate=media.fps, width=media.width, height=media.height)
        audio = out.add_stream("opus", rate=48000, layout="mono")
        audio.codec_context.extradata = media.opus_head
        for capture, kind, item in events:
            stream = video if kind == "video" else audio
            packet = av.Packet(item.data)
            packet.stream, packet.time_base = stream, Fraction(1, 90000)
            packet.pts = packet.dts = round((capture + CLIP_OFFSET) * 90000)
            if kind == "video":
                packet.is_keyframe = item.keyframe
            out.mux(packet)
    frames = {"video": [float(t - origin) for t, kind, _ in events if kind == "video"],
              "audio": [float(t - origin) for t, kind, _ in events if kind == "audio"]}
    Path(f"{temporary}.frames").write_text(json.dumps(frames))
    os.replace(f"{temporary}.frames", frames_path)
    os.replace(temporary, path)
    return path


def media_digest(media) -> str:
    import hashlib

    digest = hashlib.sha256()
    for item in (*media.video, *media.audio):
        digest.update(item.data)
    return digest.hexdigest()[:24]


def command(binary: str, clip: Path, spec) -> list[str]:
    """The ffmpeg command line: one RTP output per track, to the node's answered ports."""
    args = [binary, "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-i", str(clip)]
    for kind, index in (("video", "v"), ("audio", "a")):
        track = spec.track(kind)
        host, rtp_port, rtcp_port = track.rtp[0], track.rtp[1], track.rtcp[1]
        args += ["-map", f"0:{index}", "-c", "copy", "-payload_type", str(track.payload_type)]
        if track.ssrc:
            args += ["-ssrc", str(track.ssrc)]
        args += ["-f", "rtp", f"rtp://{host}:{rtp_port}?rtcpport={rtcp_port}&pkt_size={PACKET_SIZE}"]
    return args


# -- the publisher process (imports nothing heavy: N of them start at once on one core) ----


def main(argv: list[str] | None = None) -> int:
    args = json.loads((sys.argv[1:] if argv is None else argv)[0])
    frames = json.loads(Path(args["frames"]).read_text())
    manifest = {"t0_mono": 0.0, "completed": False, "error": "", "video": [], "audio": []}
    process = None

    def stop(signum, frame):  # noqa: ARG001
        if process is not None and process.poll() is None:
            process.terminate()

    signal.signal(signal.SIGTERM, stop)
    time.sleep(max(0.0, args["start_time"] - time.time()))
    manifest["t0_mono"] = time.monotonic() + (args["start_time"] - time.time())  # when it was due
    started = time.monotonic()  # a frame is sent at its capture time after this (-re)
    process = subprocess.Popen(args["command"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    _, errors = process.communicate()
    if process.returncode == 0:
        manifest["completed"] = True
        for kind in ("video", "audio"):
            manifest[kind] = [[i, capture, started + capture] for i, capture in enumerate(frames[kind])]
    else:
        manifest["error"] = f"ffmpeg exited with {process.returncode}: {errors.decode(errors='replace')[-800:]}"
    temporary = f"{args['manifest']}.tmp{os.getpid()}"
    Path(temporary).write_text(json.dumps(manifest))
    os.replace(temporary, args["manifest"])
    return 0 if manifest["completed"] else 1


if __name__ == "__main__":
    sys.exit(main())
