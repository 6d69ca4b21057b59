"""A WHIP publisher process for the benchmarks: FFmpeg's own WebRTC stack (PyAV's
`whip` muxer) publishing the benchmark clip, pre-encoded, in real time.

    python -m benchmarks.whip_publisher '{"spec": <PublisherSpec JSON>, "url": <WHIP endpoint>, "clip": <path>}'

The clip (`ensure_clip`, once, cached on disk beside testkit.media's cache): the
video of `make_test_media` as the RTP publishers send it (libx264 constrained
baseline, so no B-frames, which the whip muxer refuses; SPS/PPS before every IDR) and
its sound encoded once more as *stereo* Opus (the whip muxer refuses anything but
stereo 48 kHz Opus), in one NUT file. A publisher demuxes it and muxes the packets as
they are: its streams are `add_stream_from_template` copies of the file's (codec
parameters and extradata; no codec is opened), so nothing is encoded per publisher.

Timing, as testkit.rtp: capture time 0 (the first video frame) is
`spec.start_time` (wall) / `t0_mono`; a frame captured at t is sent at t0 + t.
`CONNECT_S` before that, the publisher opens the muxer: FFmpeg POSTs its offer, does
ICE and DTLS (about 1.6 s on localhost, most of it DTLS's first retransmission timer)
and then the publisher writes `<manifest>.live.json` with the Location FFmpeg was
given. FFmpeg keeps the Location in its private context; it logs it (verbose level,
"ICE STUN ok, ... location=...") and that is where it is read. Fresh timestamps:
FFmpeg's RTP muxer draws its own SSRCs and RTP timestamp bases; its pts are the
clip's times, so both tracks keep the clip's A/V alignment. FFmpeg's interleaver
holds each muxed packet until the next one (see `_Publisher`): a frame counts as sent
when FFmpeg wrote it out.

Once everything is sent it writes its manifest (JSON: `t0_mono`, `completed`, and per
track one `[frame index, capture time, time.monotonic() when sent]` per frame) and
keeps the session until SIGTERM, so that the harness reads the stream's counters
before FFmpeg's DELETE ends it.

FFmpeg answers none of the ICE consent checks the node sends once connected
(FFmpeg 8.0's `whip_write_packet`, libavformat/whip.c, handles DTLS only); the node
keeps such a session while its media arrives (`workers.inputs.aiortc_patches`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import av.logging
import numpy as np

from testkit.media import CACHE_DIR
from testkit.probe import capture_ffmpeg_logs
from testkit.rtp import PublisherSpec

REPO_ROOT = Path(__file__).resolve().parents[1]
CONNECT_S = 3.0  # connect this long before capture time 0
HANDSHAKE_TIMEOUT_MS = 20_000
LOCATION = re.compile(r"\blocation=([^,\s]+)")


def ensure_clip(spec: PublisherSpec) -> Path:
    """The clip for WHIP publishers: make_test_media's H.264 as it is, its PCM as stereo
    Opus; named after a digest of that media, so a changed clip is never taken for this one."""
    media = spec.media()
    digest = hashlib.sha256(media.pcm.tobytes())
    for au in media.video:
        digest.update(au.data)
    path = CACHE_DIR / f"whip-{digest.hexdigest()[:24]}.nut"
    if path.exists():
        return path
    CACHE_DIR.mkdir(exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    with av.open(str(temporary), "w", format="nut") as out:
        video = out.add_mux_stream("h264", rate=media.fps, width=media.width, height=media.height)
        video.time_base = Fraction(1, media.fps)
        audio = out.add_stream("libopus", rate=media.audio_rate, layout="stereo")
        audio.codec_context.options = {"frame_duration": "20", "application": "audio", "dtx": "0"}
        audio.codec_context.bit_rate = 96_000
        size = 960  # 20 ms
        pcm = np.zeros(-(-len(media.pcm) // size) * size, np.float32)
        pcm[:len(media.pcm)] = media.pcm
        for start in range(0, len(media.pcm), size):
            frame = av.AudioFrame.from_ndarray(np.vstack([pcm[start:start + size]] * 2), format="fltp",
                                               layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = media.audio_rate, start, Fraction(1, media.audio_rate)
            out.mux(audio.encode(frame))
        out.mux(audio.encode(None))
        for au in media.video:
            packet = av.Packet(au.data)
            packet.stream, packet.time_base, packet.pts, packet.dts = video, Fraction(1, media.fps), au.index, au.index
            packet.is_keyframe = au.keyframe
            out.mux(packet)
    os.replace(temporary, path)
    return path


def live_path(spec: PublisherSpec) -> str:
    return f"{spec.manifest_path}.live.json"


def write_json(path: str, value: dict) -> None:
    temporary = f"{path}.tmp{os.getpid()}"
    Path(temporary).write_text(json.dumps(value))
    os.replace(temporary, path)


# -- the harness's side ------------------------------------------------------------------


def start(spec: PublisherSpec, url: str, clip: Path, preexec_fn=None) -> subprocess.Popen:
    for stale in (spec.manifest_path, live_path(spec)):
        Path(stale).unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p))
    return subprocess.Popen([sys.executable, "-m", "benchmarks.whip_publisher",
                             json.dumps({"spec": spec.to_json(), "url": url, "clip": str(clip)})],
                            cwd=str(REPO_ROOT), env=env, stdout=subprocess.DEVNULL, preexec_fn=preexec_fn)


def wait_json(path: str, timeout_s: float, process: subprocess.Popen, manifest_path: str) -> dict:
    """A file the publisher writes; fails fast, with the publisher's error, if it exits first."""
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(path):
        if path != manifest_path and os.path.exists(manifest_path):  # a publisher of many peers: this one failed
            raise RuntimeError(f"WHIP publisher failed: {json.loads(Path(manifest_path).read_text()).get('error')}")
        if process.poll() is not None and not os.path.exists(path):
            error = json.loads(Path(manifest_path).read_text()).get("error") if os.path.exists(manifest_path) else ""
            raise RuntimeError(f"WHIP publisher exited with {process.returncode} before writing {path}: {error}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {path} after {timeout_s:.0f} s")
        time.sleep(0.02)
    return json.loads(Path(path).read_text())


# -- the publisher process -----------------------------------------------------------------


class _Stopped(Exception):
    pass


def _stop(signum, frame):  # noqa: ARG001
    raise _Stopped()


def load_clip(path: Path):
    """(the clip's container, the clip time of its first video frame, its packets as
    (capture time, kind, frame index, packet) in sending order); capture time 0 is the
    first video frame."""
    clip = av.open(str(path))
    counters = {"video": 0, "audio": 0}
    events = []
    for packet in clip.demux():
        if packet.size:
            kind = packet.stream.type
            events.append((packet.pts * packet.time_base, kind, counters[kind], packet))
            counters[kind] += 1
    origin = min(t for t, kind, _, _ in events if kind == "video")
    events = sorted(((t - origin, kind, index, packet) for t, kind, index, packet in events),
                    key=lambda e: (e[0], e[1] == "audio"))
    return clip, origin, events


def _connect(url: str, clip):
    """Open the whip muxer (offer, answer, ICE, DTLS): (container, streams by kind, Location)."""
    out = av.open(url, "w", format="whip", options={"handshake_timeout": str(HANDSHAKE_TIMEOUT_MS)},
                  container_options={"max_interleave_delta": "1"})  # see _Publisher
    streams = {s.type: out.add_stream_from_template(s) for s in clip.streams if s.type in ("video", "audio")}
    with capture_ffmpeg_logs(av.logging.VERBOSE) as logs:
        out.start_encoding()
    found = [m.group(1) for _, _, message in logs if (m := LOCATION.search(message))]
    if not found:
        raise RuntimeError("FFmpeg's whip muxer connected but logged no Location")
    return out, streams, found[-1]


class _Publisher:
    """Sends the clip on time through FFmpeg's interleaver.

    `av_interleaved_write_frame` (PyAV's only way to mux) holds a packet until it can
    interleave it: with `max_interleave_delta` 1 us, until a packet with a later time is
    muxed. So each packet is muxed at the due time of the one before it, which FFmpeg
    then writes; the last is pushed out by a *sentinel* (a copy of it, 1 s later), which
    FFmpeg holds until the end of the session. A frame counts as sent when FFmpeg wrote it.
    """

    def __init__(self, spec: PublisherSpec, url: str, clip: Path):
        self.spec, self.url, self.clip = spec, url, clip
        self.out = None
        self.connected: float | None = None  # time.monotonic() when the session was up
        self.streams: dict = {}
        self.held: list[tuple[Fraction, str, int]] = []  # muxed, not written yet: (capture time, kind, index)
        self.manifest = {"t0_mono": 0.0, "completed": False, "location": None, "error": "", "video": [], "audio": []}

    def run(self) -> None:
        clip, origin, events = load_clip(self.clip)
        start_wall = self.spec.start_time if self.spec.start_time is not None else time.time() + CONNECT_S
        time.sleep(max(0.0, start_wall - CONNECT_S - time.time()))
        began = time.monotonic()
        self.out, self.streams, location = _connect(self.url, clip)
        self.connected = time.monotonic()
        self.manifest["location"] = location
        write_json(live_path(self.spec), {"location": location, "connect_s": round(time.monotonic() - began, 3)})
        self.manifest["t0_mono"] = t0 = time.monotonic() + (start_wall - time.time())
        last_capture, last_kind, _, last_packet = events[-1]
        sentinel = (last_capture + 1, last_kind, -1, av.Packet(bytes(last_packet)))
        self.mux(*events[0], origin)
        for (due, *_), following in zip(events, events[1:] + [sentinel]):
            time.sleep(max(0.0, t0 + float(due) - time.monotonic()))
            self.mux(*following, origin)
        self.manifest["completed"] = True

    def mux(self, capture: Fraction, kind: str, index: int, packet, origin: Fraction) -> None:
        stream = self.streams[kind]
        packet.stream, packet.time_base = stream, stream.time_base
        packet.pts = packet.dts = round((capture + origin) / stream.time_base)
        self.out.mux(packet)
        now = time.monotonic()
        written = [h for h in self.held if h[0] < capture]
        for held_capture, held_kind, held_index in written:
            self.manifest[held_kind].append([held_index, float(held_capture), now])
        self.held = [h for h in self.held if h[0] >= capture] + ([(capture, kind, index)] if index >= 0 else [])

    def close(self) -> None:
        if self.out is not None:
            try:
                self.out.close()  # FFmpeg DELETEs the Location
            except Exception:  # noqa: BLE001 - the node may have ended the session already
                pass


def main(argv: list[str] | None = None) -> int:
    args = json.loads((sys.argv[1:] if argv is None else argv)[0])
    spec = PublisherSpec.from_json(args["spec"])
    publisher = _Publisher(spec, args["url"], Path(args["clip"]))
    signal.signal(signal.SIGTERM, _stop)
    code = 0
    try:
        publisher.run()
        write_json(spec.manifest_path, publisher.manifest)
        while True:  # the session stays until the harness has read the stream's counters
            time.sleep(3600)
    except _Stopped:
        pass
    except Exception as error:  # noqa: BLE001 - reported in the manifest
        since = f" {time.monotonic() - publisher.connected:.1f} s into the session" if publisher.connected else ""
        publisher.manifest["error"] = f"{error!r}{since}"[:1000]
        code = 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if not os.path.exists(spec.manifest_path):
            write_json(spec.manifest_path, publisher.manifest)
        publisher.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
