"""`recnode demo`: the whole product in one command.

Starts a node on a temporary data directory, publishes the test kit's synthetic
H.264 + Opus clip over RTP (a `testkit.rtp` publisher process, with RTCP Sender
Reports), records it as every OutputFileFormat and StreamType at once, and prints
what was written, decoded by `testkit.probe`.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import tempfile
from pathlib import Path

import aiohttp
from aiohttp import web

from engine.api import Api
from engine.auth import signed_query
from engine.config import NodeConfig
from engine.node import RecordingNode
from testkit import probe
from testkit.ports import free_port
from testkit.rtp import PublisherSpec, offer_sdp, parse_answer, start_publisher, wait_manifest

SECONDS = 5.0
EXPECTED_FILES = 15  # 12 tasks; StreamType 4 writes two files
PUBLISHER_TIMEOUT_S = 60.0  # encoding the clip, then sending it in real time


def describe_file(path: Path) -> tuple[str, str]:
    """Codecs and decoded frame counts, by decoding every frame."""
    report = probe.decode_all(path)
    codecs = "+".join(c for c in (report.video_codec, report.audio_codec) if c)
    counts = {"video": report.video_frames, "audio": report.audio_frames}
    return codecs, ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)


def print_table(rows: list[tuple]) -> None:
    header = ("task", "file", "bytes", "ms", "codecs", "decoded frames")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)))


async def run_demo() -> int:
    data_dir = Path(tempfile.mkdtemp(prefix="recnode-demo-"))
    port = free_port()
    config = NodeConfig(data_dir=data_dir, app_id=1, server_secret=secrets.token_hex(16), port=port,
                        rtp_bind_host="127.0.0.1", rtp_port_range=(43000 + random.randrange(0, 500) * 2, 44999),
                        log_level="warning")
    print(f"starting a node on http://127.0.0.1:{port}, data in {data_dir}")
    node = await RecordingNode.create(config)
    runner = web.AppRunner(Api(node).app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    print("encoding a synthetic H.264 + Opus stream ...")
    spec = PublisherSpec(duration_s=SECONDS, manifest_path=str(data_dir / "publisher.manifest"))
    offer = await asyncio.to_thread(offer_sdp, spec, True, True)
    try:
        async with aiohttp.ClientSession() as http:
            async def call(action: str, body: dict) -> dict:
                url = f"{base}/?{signed_query(action, config.app_id, config.server_secret)}"
                async with http.post(url, json=body) as response:
                    answer = await response.json()
                if answer["Code"] != 0:
                    raise RuntimeError(f"{action}: {answer}")
                return answer["Data"]

            async with http.post(f"{base}/rtp/demo-room/camera?UserId=demo-user", data=offer,
                                 headers={"Content-Type": "application/sdp"}) as response:
                answer = await response.text()
                location = response.headers["Location"]
            spec = spec.with_targets(parse_answer(answer))
            ports = f"{spec.video.rtp[1]}/{spec.audio.rtp[1]}"
            print(f"published stream 'camera' in room 'demo-room': RTP to ports {ports}")
            tasks = {}
            for fmt in ("mp4", "flv", "hls"):
                for stream_type in (1, 2, 3, 4):
                    tasks[(fmt, stream_type)] = (await call("StartRecord", {
                        "RoomId": "demo-room",
                        "RecordInputParams": {"RecordMode": 1, "StreamType": stream_type},
                        "RecordOutputParams": {"OutputFileFormat": fmt, "OutputFolder": f"{fmt}-st{stream_type}",
                                               "FragmentSeconds": 2},
                        "StorageParams": {"Vendor": 0, "Bucket": "demo"},
                    }))["TaskId"]
            print(f"started {len(tasks)} tasks (mp4, flv, hls x StreamType 1-4); sending {SECONDS:.0f} s of media ...")
            publisher = start_publisher(spec)
            await asyncio.to_thread(wait_manifest, spec.manifest_path, PUBLISHER_TIMEOUT_S, publisher)
            rows = []
            for (fmt, stream_type), task_id in tasks.items():
                await call("StopRecord", {"TaskId": task_id})
                status = await call("DescribeRecordStatus", {"TaskId": task_id})
                folder = f"{fmt}-st{stream_type}"
                for entry in status.get("RecordFiles", []):
                    name = entry["FileId"]  # the file's name; it is in the task's OutputFolder
                    path = data_dir / "storage" / "demo" / folder / name
                    codecs, frames = await asyncio.to_thread(describe_file, path)
                    short = f"{folder}/..._{name.rsplit('_', 2)[-2]}_{name.rsplit('_', 1)[-1]}"
                    rows.append((f"{fmt} StreamType {stream_type}", short, entry["FileSize"], entry["Duration"],
                                 codecs, frames))
            await http.delete(location)
    finally:
        await node.stop()
        await runner.cleanup()
    print()
    print_table(rows)
    print(f"\nfiles are in {data_dir / 'storage' / 'demo'}")
    return 0 if len(rows) == EXPECTED_FILES and all(row[-1] for row in rows) else 1
