"""`recnode demo`: the whole product in one command.

Starts a node on a temporary data directory, publishes a synthetic H.264 + Opus
stream over RTP (with RTCP Sender Reports), records it as every OutputFileFormat
and StreamType at once, and prints what was written.
"""

from __future__ import annotations

import asyncio
import fractions
import random
import secrets
import socket
import tempfile
import time
from pathlib import Path

import aiohttp
import av
import numpy as np
from aiortc.codecs.h264 import H264Encoder
from aiortc.rtp import RtcpSenderInfo, RtcpSrPacket, RtpPacket
from aiohttp import web

from engine.api import Api
from engine.auth import signed_query
from engine.config import NodeConfig
from engine.node import RecordingNode
from workers.clock import NTP_EPOCH_OFFSET

FPS = 30
SECONDS = 5.0
WIDTH, HEIGHT = 320, 240
AUDIO_FRAME = 960  # 20 ms at 48 kHz
EXPECTED_FILES = 15  # 12 tasks; StreamType 4 writes two files


def synthetic_media(seconds: float) -> tuple[list[tuple[float, bytes]], list[tuple[float, bytes]]]:
    """A moving bar that flashes white once a second, and a beep at each flash."""
    video_encoder = av.CodecContext.create("libx264", "w")
    video_encoder.width, video_encoder.height, video_encoder.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    video_encoder.time_base = fractions.Fraction(1, FPS)
    video_encoder.options = {"profile": "baseline", "tune": "zerolatency",
                             "x264-params": f"repeat-headers=1:keyint={FPS}:scenecut=0"}
    video = []
    for i in range(int(seconds * FPS)):
        image = np.full((HEIGHT, WIDTH, 3), 40, np.uint8)
        image[:, (i * 4) % WIDTH:(i * 4) % WIDTH + 20] = (200, 80, 40)
        if i % FPS == FPS // 2:
            image[:] = 255
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        video += [(i / FPS, bytes(p)) for p in video_encoder.encode(frame)]
    video += [(len(video) / FPS, bytes(p)) for p in video_encoder.encode(None)]

    audio_encoder = av.CodecContext.create("libopus", "w")
    audio_encoder.sample_rate, audio_encoder.layout, audio_encoder.format = 48000, "stereo", "s16"
    audio_encoder.time_base = fractions.Fraction(1, 48000)
    t = np.arange(int(seconds * 48000)) / 48000
    pcm = np.where((t % 1.0 >= 0.5) & (t % 1.0 < 0.56), 0.5 * np.sin(2 * np.pi * 1000 * t), 0.0)
    pcm16 = (np.repeat(pcm[None, :], 2, axis=0).T.reshape(1, -1) * 32767).astype(np.int16)
    audio = []
    for i in range(len(t) // AUDIO_FRAME):
        frame = av.AudioFrame.from_ndarray(pcm16[:, i * AUDIO_FRAME * 2:(i + 1) * AUDIO_FRAME * 2], format="s16",
                                           layout="stereo")
        frame.sample_rate, frame.pts = 48000, i * AUDIO_FRAME
        audio += [(p.pts / 48000, bytes(p)) for p in audio_encoder.encode(frame)]
    return video, audio


OFFER = """v=0\r
o=- 0 0 IN IP4 127.0.0.1\r
s=recnode demo\r
c=IN IP4 127.0.0.1\r
t=0 0\r
m=video 9 RTP/AVP 96\r
a=rtpmap:96 H264/90000\r
a=fmtp:96 packetization-mode=1\r
m=audio 9 RTP/AVP 111\r
a=rtpmap:111 opus/48000/2\r
"""


def answered_ports(answer: str) -> list[int]:
    return [int(line.split()[1]) for line in answer.splitlines() if line.startswith("m=")]


def ntp64(unix: float) -> int:
    return (int((unix + NTP_EPOCH_OFFSET) * 2**32)) & 0xFFFFFFFFFFFFFFFF


async def publish(video, audio, video_port: int, audio_port: int) -> None:
    """Send both tracks over RTP in real time, with a Sender Report each second."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tracks = {
        "video": dict(port=video_port, pt=96, rate=90000, ssrc=random.getrandbits(32), seq=random.getrandbits(16),
                      base=random.getrandbits(32), frames=[(t, H264Encoder._packetize(H264Encoder._split_bitstream(d)))
                                                           for t, d in video]),
        "audio": dict(port=audio_port, pt=111, rate=48000, ssrc=random.getrandbits(32), seq=random.getrandbits(16),
                      base=random.getrandbits(32), frames=[(t, [d]) for t, d in audio]),
    }
    events = sorted((t, kind, payloads) for kind, track in tracks.items() for t, payloads in track["frames"])
    start_wall, start = time.time(), time.monotonic()
    next_report = 0.0
    for t, kind, payloads in events:
        await asyncio.sleep(max(0.0, start + t - time.monotonic()))
        if t >= next_report:
            for track in tracks.values():
                rtp = (track["base"] + int(t * track["rate"])) & 0xFFFFFFFF
                report = RtcpSrPacket(ssrc=track["ssrc"], sender_info=RtcpSenderInfo(
                    ntp_timestamp=ntp64(start_wall + t), rtp_timestamp=rtp, packet_count=0, octet_count=0))
                sock.sendto(bytes(report), ("127.0.0.1", track["port"] + 1))
            next_report += 1.0
        track = tracks[kind]
        for index, payload in enumerate(payloads):
            packet = RtpPacket(payload_type=track["pt"], sequence_number=track["seq"],
                               timestamp=(track["base"] + int(t * track["rate"])) & 0xFFFFFFFF,
                               ssrc=track["ssrc"], marker=index == len(payloads) - 1)
            packet.payload = payload
            sock.sendto(packet.serialize(), ("127.0.0.1", track["port"]))
            track["seq"] = (track["seq"] + 1) & 0xFFFF
    sock.close()


def describe_file(path: Path) -> tuple[str, str]:
    """Codecs and decoded frame counts, by decoding every frame."""
    codecs, frames = [], []
    with av.open(str(path)) as container:
        for stream in container.streams:
            codecs.append(stream.codec_context.name)
        counts = {"video": 0, "audio": 0}
        for frame in container.decode(*container.streams):
            counts["video" if isinstance(frame, av.VideoFrame) else "audio"] += 1
    frames = [f"{counts[k]} {k}" for k in ("video", "audio") if counts[k]]
    return "+".join(codecs), ", ".join(frames)


async def run_demo() -> int:
    data_dir = Path(tempfile.mkdtemp(prefix="recnode-demo-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = NodeConfig(data_dir=data_dir, app_id=1, server_secret=secrets.token_hex(16), port=port,
                        rtp_bind_host="127.0.0.1", rtp_port_range=(43000 + random.randrange(0, 500) * 2, 44999),
                        log_level="warning")
    print(f"starting a node on http://127.0.0.1:{port}, data in {data_dir}")
    node = RecordingNode(config)
    await node.start()
    runner = web.AppRunner(Api(node).app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    print("encoding a synthetic H.264 + Opus stream ...")
    video, audio = await asyncio.to_thread(synthetic_media, SECONDS)
    try:
        async with aiohttp.ClientSession() as http:
            async def call(action: str, body: dict) -> dict:
                url = f"{base}/?{signed_query(action, config.app_id, config.server_secret)}"
                async with http.post(url, json=body) as response:
                    answer = await response.json()
                if answer["Code"] != 0:
                    raise RuntimeError(f"{action}: {answer}")
                return answer["Data"]

            async with http.post(f"{base}/rtp/demo-room/camera?UserId=demo-user", data=OFFER,
                                 headers={"Content-Type": "application/sdp"}) as response:
                answer = await response.text()
                location = response.headers["Location"]
            video_port, audio_port = answered_ports(answer)
            print(f"published stream 'camera' in room 'demo-room': RTP to ports {video_port}/{audio_port}")
            tasks = {}
            for fmt in ("mp4", "flv", "hls"):
                for stream_type in (1, 2, 3, 4):
                    tasks[(fmt, stream_type)] = (await call("StartRecord", {
                        "RoomId": "demo-room",
                        "RecordInputParams": {"RecordMode": 1, "StreamType": stream_type},
                        "RecordOutputParams": {"OutputFileFormat": fmt, "OutputFolder": f"{fmt}-st{stream_type}/",
                                               "FragmentSeconds": 2},
                        "StorageParams": {"Vendor": 0, "Bucket": "demo"},
                    }))["TaskId"]
            print(f"started {len(tasks)} tasks (mp4, flv, hls x StreamType 1-4); sending {SECONDS:.0f} s of media ...")
            await publish(video, audio, video_port, audio_port)
            rows = []
            for (fmt, stream_type), task_id in tasks.items():
                await call("StopRecord", {"TaskId": task_id})
                status = await call("DescribeRecordStatus", {"TaskId": task_id})
                for entry in status["RecordFiles"]:
                    path = data_dir / "storage" / "demo" / entry["FileId"]
                    codecs, frames = await asyncio.to_thread(describe_file, path)
                    folder, name = entry["FileId"].split("/", 1)
                    short = f"{folder}/..._{name.rsplit('_', 2)[-2]}_{name.rsplit('_', 1)[-1]}"
                    rows.append((f"{fmt} StreamType {stream_type}", short, entry["FileSize"], entry["Duration"],
                                 codecs, frames))
            await http.delete(location)
    finally:
        await node.stop()
        await runner.cleanup()
    print()
    header = ("task", "file", "bytes", "ms", "codecs", "decoded frames")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)))
    print(f"\nfiles are in {data_dir / 'storage' / 'demo'}")
    return 0 if len(rows) == EXPECTED_FILES and all(row[-1] for row in rows) else 1
