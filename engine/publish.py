"""`recnode publish`: send a test pattern or a media file to a node, over plain RTP
or WHIP, so a node can be tried (and the README walked through) with nothing else.

- Test pattern, plain RTP: testkit.rtp's publisher process (synthetic H.264 + Opus,
  paced in real time, with Sender Reports), announced with the offer it sends to.
- Test pattern, WHIP: testkit.whip's aiortc publisher process (ICE from 127.0.0.1:
  for a node on this machine).
- A file, plain RTP: decoded and encoded again (H.264 Constrained Baseline + Opus)
  by PyAV and sent in real time through FFmpeg's RTP muxer, one output per track,
  with the payload types of the offer it announced.
- A file, WHIP: aiortc's MediaPlayer and a peer connection of this process.

The stream is announced under `--room`/`--stream`, sent once, then unpublished.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

VIDEO_PT, AUDIO_PT = 96, 111
LOOP_CLIP_S = 2.0  # a longer test pattern repeats a clip this long (encoded once: a quick start)
FILE_GOP_S = 1  # key frame interval of a file encoded for plain RTP
MAX_REDIRECTS = 5  # 307s to other nodes of a fleet followed before giving up (a loop)


class PublishError(Exception):
    """What went wrong, in one line for the user."""


@dataclass(frozen=True)
class PublishRequest:
    node_url: str
    room_id: str
    stream_id: str
    user_id: str
    whip: bool = False
    file: Path | None = None
    duration_s: float = 10.0
    token: str = ""  # the node's --ingest-token, if it has one

    def announce_url(self) -> str:
        kind = "whip" if self.whip else "rtp"
        quote = urllib.parse.quote
        return (f"{self.node_url.rstrip('/')}/{kind}/{quote(self.room_id, safe='')}/"
                f"{quote(self.stream_id, safe='')}?{urllib.parse.urlencode({'UserId': self.user_id})}")

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def _http(method: str, url: str, headers: dict[str, str], body: bytes | None = None) -> tuple[int, str, dict]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read().decode(), dict(answer.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace"), dict(error.headers)
    except OSError as error:
        raise PublishError(f"cannot reach {url}: {error}") from None


def announce(request: PublishRequest, offer: str) -> tuple[str, str]:
    """POST the offer, to the node a 307 names if the node asked is full (a fleet);
    (the SDP answer, the resource URL to DELETE)."""
    url = request.announce_url()
    for _ in range(MAX_REDIRECTS + 1):
        # urllib follows no 307 of a POST: done here, Authorization header and offer sent again
        status, body, headers = _http("POST", url, {"Content-Type": "application/sdp", **request.headers()},
                                      offer.encode())
        if status not in (307, 308):
            break
        url = urllib.parse.urljoin(url, headers["Location"])
        _say(f"redirected to {url.split('?')[0]}")
    if status != 201:
        raise PublishError(f"the node answered {status}: {body.strip()}")
    return body, urllib.parse.urljoin(url, headers["Location"])


def unpublish(request: PublishRequest, location: str) -> None:
    _http("DELETE", location, request.headers())


def run(request: PublishRequest) -> int:
    """Publish as asked; prints where it sends and returns the exit status."""
    if request.file is not None and not request.file.is_file():
        raise PublishError(f"--file: no such file {str(request.file)!r}")
    if request.whip:
        return asyncio.run(_whip_file(request)) if request.file else _whip_pattern(request)
    return _rtp_file(request) if request.file else _rtp_pattern(request)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _wait(process: subprocess.Popen) -> int:
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        process.wait()
        return 130


def _rtp_pattern(request: PublishRequest) -> int:
    from testkit.rtp import PublisherSpec, offer_sdp, parse_answer, start_publisher

    spec = PublisherSpec(duration_s=request.duration_s, keep_sent_bytes=False,
                         loop_clip_s=LOOP_CLIP_S if request.duration_s > LOOP_CLIP_S else 0.0)
    answer, location = announce(request, offer_sdp(spec, True, True))
    targets = parse_answer(answer)
    _say(f"publishing a {request.duration_s:g} s test pattern (H.264 + Opus) over RTP to "
         + ", ".join(f"{kind} {host}:{port}" for kind, (host, port, _) in targets.items()))
    try:
        with tempfile.TemporaryDirectory(prefix="recnode-publish-") as scratch:
            spec = replace(spec.with_targets(targets), manifest_path=str(Path(scratch) / "manifest.pkl"))
            return _wait(start_publisher(spec))
    finally:
        unpublish(request, location)


def _whip_pattern(request: PublishRequest) -> int:
    from testkit.whip.spec import PublisherSpec as WhipSpec
    from testkit.whip.spec import read_manifest, start_publisher

    _say(f"publishing a {request.duration_s:g} s test pattern over WHIP to {request.announce_url()}")
    with tempfile.TemporaryDirectory(prefix="recnode-publish-") as scratch:
        manifest = Path(scratch) / "manifest.json"
        spec = WhipSpec(url=request.announce_url(), manifest=str(manifest), token=request.token,
                        video_frames=max(1, round(request.duration_s * 30)), linger_s=0.2)

        async def publish() -> int:
            process = await start_publisher("aiortc", spec)
            return await process.wait()

        try:
            code = asyncio.run(publish())
        except KeyboardInterrupt:
            return 130
        error = read_manifest(str(manifest)).error if manifest.exists() else "the publisher wrote no report"
        if error:
            raise PublishError(error)
        return code


async def _whip_file(request: PublishRequest) -> int:
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaPlayer

    player = MediaPlayer(str(request.file))
    pc = RTCPeerConnection()
    for track in (player.audio, player.video):
        if track is not None:
            pc.addTransceiver(track, direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    location = None
    try:
        answer, location = await asyncio.to_thread(announce, request, pc.localDescription.sdp)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        _say(f"publishing {request.file} over WHIP to {request.announce_url()}")
        ended = [asyncio.Event() for track in (player.audio, player.video) if track is not None]
        for track, event in zip([t for t in (player.audio, player.video) if t is not None], ended, strict=True):
            track.on("ended", event.set)
        await asyncio.gather(*(event.wait() for event in ended))
        return 0
    finally:
        await pc.close()
        if location is not None:
            await asyncio.to_thread(unpublish, request, location)


def file_offer(has_video: bool, has_audio: bool) -> str:
    """What `_rtp_file` sends: H.264 (packetization-mode 1, in-band parameter sets) and Opus."""
    lines = ["v=0", "o=- 0 0 IN IP4 127.0.0.1", "s=recnode publish", "c=IN IP4 127.0.0.1", "t=0 0"]
    if has_video:
        lines += [f"m=video 9 RTP/AVP {VIDEO_PT}", f"a=rtpmap:{VIDEO_PT} H264/90000",
                  f"a=fmtp:{VIDEO_PT} packetization-mode=1;profile-level-id=42e01f", "a=sendonly"]
    if has_audio:
        lines += [f"m=audio 9 RTP/AVP {AUDIO_PT}", f"a=rtpmap:{AUDIO_PT} opus/48000/2", "a=sendonly"]
    return "\r\n".join(lines) + "\r\n"


def _rtp_file(request: PublishRequest) -> int:
    import av

    from testkit.rtp import parse_answer

    with av.open(str(request.file)) as probe:
        has_video, has_audio = bool(probe.streams.video), bool(probe.streams.audio)
    if not (has_video or has_audio):
        raise PublishError(f"--file: {request.file} has neither video nor audio")
    answer, location = announce(request, file_offer(has_video, has_audio))
    targets = parse_answer(answer)
    _say(f"publishing {request.file} over RTP to "
         + ", ".join(f"{kind} {host}:{port}" for kind, (host, port, _) in targets.items()))
    try:
        _send_file(request.file, targets)
    except KeyboardInterrupt:
        return 130
    finally:
        unpublish(request, location)
    return 0


def _send_file(path: Path, targets: dict[str, tuple[str, int, int]]) -> None:
    """Decode `path`, encode H.264 / Opus, send each track to its RTP port in real time."""
    import av

    source = av.open(str(path))
    outputs, encoders, frames_sent, started = {}, {}, {}, time.monotonic()
    try:
        streams = [s for s in (source.streams.video[:1] + source.streams.audio[:1]) if s.type in targets]
        for stream in streams:
            host, port, rtcp = targets[stream.type]
            output = av.open(f"rtp://{host}:{port}?rtcpport={rtcp}", "w", format="rtp",
                             options={"payload_type": str(VIDEO_PT if stream.type == "video" else AUDIO_PT)})
            if stream.type == "video":
                rate = stream.average_rate or Fraction(30)
                encoder = output.add_stream("libx264", rate=rate)
                encoder.width, encoder.height, encoder.pix_fmt = stream.width, stream.height, "yuv420p"
                encoder.options = {"profile": "baseline", "tune": "zerolatency", "preset": "veryfast",
                                   "g": str(max(1, round(float(rate) * FILE_GOP_S))),
                                   "x264-params": "repeat-headers=1"}
            else:
                encoder = output.add_stream("libopus", rate=48000, layout="stereo")
            outputs[stream.index], encoders[stream.index] = output, encoder
        for packet in source.demux(*streams):
            for frame in packet.decode():
                if frame.time is not None:  # real time: each frame leaves at its own time
                    delay = started + frame.time - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                encoder = encoders[packet.stream.index]
                if isinstance(frame, av.VideoFrame):
                    frame = frame.reformat(encoder.width, encoder.height, "yuv420p")
                    count = frames_sent[packet.stream.index] = frames_sent.get(packet.stream.index, 0) + 1
                    frame.pts, frame.time_base = count - 1, 1 / encoder.codec_context.framerate
                else:
                    frame.pts = None  # re-framed into 20 ms by the encoder's resampler
                for encoded in encoder.encode(frame):
                    outputs[packet.stream.index].mux(encoded)
        for index, encoder in encoders.items():
            for packet in encoder.encode(None):
                outputs[index].mux(packet)
    finally:
        for output in outputs.values():
            output.close()
        source.close()
