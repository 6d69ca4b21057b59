"""What the outputs that decode or encode media cost (issue 15): one stream (the
benchmarks' clip: 720p30 H.264 at 2.5 Mb/s, a key frame every 2 s, 48 kHz Opus,
declared stereo as SDP always declares it) recorded in-process by one task of each
kind onto a disk, with the same Recording / SnapshotRecording a worker runs;
process CPU time (every thread: the media path, the snapshot thread, the storage
thread) per minute of stream, best of `--repeat` runs. The media arrives as fast as
it is taken, so nothing waits: what is measured is the work, not the real time.
The baseline, mp4 with the Opus as sent, is the muxing every recording does (a
worker's receiving is not in it); the rest is read against it.

    .venv/bin/python -m benchmarks.output_cost --seconds 60 --repeat 3 --node

With `--node`, MP4 with Opus and with AAC are also measured the way a user would
see them: a real node (`--mp4-audio opus`, then `aac`) records one 60 s stream sent
by a real plain-RTP publisher; what is reported is the CPU time of that stream's
worker process (receiving included).

Writes benchmarks/results/output-cost.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import psutil

from benchmarks.config import BenchConfig
from contract.codes import MediaKind
from contract.storage import DestinationSpec, StorageTarget
from contract.worker import RecordingSpec, StreamSpec, TrackSpec
from testkit.media import make_test_media
from testkit.node import NodeProcess, start_record_body
from testkit.ports import free_port, free_udp_range
from testkit.rtp import PublisherSpec, offer_sdp, parse_answer, start_publisher, wait_manifest
from workers.clock import StreamClock
from workers.frames import EncodedFrame
from workers.recording import Recording, State
from workers.snapshots import SnapshotRecording

# Opus declared stereo, as SDP declares it
STREAM = StreamSpec("room", "stream", "user", (TrackSpec(MediaKind.VIDEO, "H264", 96, 90000),
                                               TrackSpec(MediaKind.AUDIO, "opus", 111, 48000, 2)))
KINDS = {  # name -> changes to the task's RecordingSpec
    "mp4, Opus kept (baseline)": {},
    "mp4, --mp4-audio aac": {"mp4_audio": "aac"},
    "flv (AAC)": {"output_format": "flv"},
    "mp3 (StreamType 1)": {"output_format": "mp3", "stream_type": 1},
    "jpg every 10 s": {"output_format": "jpg", "stream_type": 2, "snapshot_interval_s": 10},
    "jpg every 5 s": {"output_format": "jpg", "stream_type": 2, "snapshot_interval_s": 5},
}


def stream_frames(seconds: float) -> list[EncodedFrame]:
    clip = BenchConfig().clip
    media = make_test_media(duration_s=seconds, fps=clip.fps, keyint=clip.keyint, width=clip.width,
                            height=clip.height, bitrate_kbps=clip.bitrate_kbps)
    frames = [EncodedFrame(MediaKind.VIDEO, au.data, round(au.time_s * 90000), au.time_s, au.keyframe)
              for au in media.video]
    frames += [EncodedFrame(MediaKind.AUDIO, p.data, round(p.time_s * 48000) + 48000, p.time_s)
               for p in media.audio]
    return sorted(frames, key=lambda f: f.arrival)


async def _record(spec: RecordingSpec, frames: list[EncodedFrame]) -> None:
    clock = StreamClock({t.kind: t.clock_rate for t in STREAM.tracks}, sync_wait_s=0)
    with ThreadPoolExecutor(1) as uploader:
        kind = SnapshotRecording if spec.output_format == "jpg" else Recording
        recording = kind(spec, STREAM, clock, uploader, lambda event: None)
        for frame in frames:
            clock.tracks[frame.kind].on_frame(frame.rtp_timestamp, frame.arrival)
            if recording.state is State.PENDING:
                recording.begin([frame], frame.arrival)
            else:
                recording.write(frame)
        await recording.close()


def cpu_seconds(spec: RecordingSpec, frames: list[EncodedFrame]) -> float:
    start = time.process_time()
    asyncio.run(_record(spec, frames))
    return time.process_time() - start


def worker_cpu_s(mp4_audio: str, seconds: float, workdir: Path) -> float:
    """CPU time of the worker of one stream recorded to mp4 by a real node, while it is sent."""
    node = NodeProcess(workdir / f"node-{mp4_audio}", free_port(), free_udp_range(), workdir / f"{mp4_audio}.log",
                       extra_args=("--mp4-audio", mp4_audio)).start()
    try:
        spec = PublisherSpec(duration_s=seconds, clip=BenchConfig().clip, manifest_path=str(workdir / "m.pkl"))
        answer = node.publish("bench", "cam", offer_sdp(spec, True, True), user_id="u")
        worker = psutil.Process(node.stream_stats(answer.headers["Location"])["WorkerPid"])
        task_id = node.ok("StartRecord", start_record_body("bench"))["TaskId"]
        before = worker.cpu_times()
        publisher = start_publisher(spec.with_targets(parse_answer(answer.body.decode())))
        wait_manifest(spec.manifest_path, proc=publisher, timeout_s=seconds + 120)
        node.ok("StopRecord", {"TaskId": task_id})
        after = worker.cpu_times()
        return (after.user - before.user) + (after.system - before.system)
    finally:
        node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--node", action="store_true", help="also MP4 Opus vs AAC through a real node")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/output-cost.json"))
    args = parser.parse_args()
    frames = stream_frames(args.seconds)
    results = {}
    with tempfile.TemporaryDirectory() as root:
        storage = DestinationSpec(StorageTarget(0, "bench", local_root=root), remote=False)
        base = RecordingSpec("B" * 16, 3, "mp4", "out/", 1, 15, storage)
        for name, changes in KINDS.items():
            spec = replace(base, **changes)
            best = min(cpu_seconds(spec, frames) for _ in range(args.repeat))
            results[name] = {"cpu_s": round(best, 3), "core_share": round(best / args.seconds, 4)}
    baseline = next(iter(results.values()))["cpu_s"]
    print(f"{'output':30} {'CPU s':>7} {'% of a core':>12} {'over baseline':>14}")
    for name, result in results.items():
        extra = (result["cpu_s"] - baseline) / args.seconds
        result["extra_core_share"] = round(extra, 4)
        print(f"{name:30} {result['cpu_s']:7.2f} {100 * result['core_share']:11.2f}% {100 * extra:+13.2f}%")
    measured = {"seconds": args.seconds, "repeat": args.repeat, "clip": asdict(BenchConfig().clip),
                "in_process": results}
    if args.node:
        with tempfile.TemporaryDirectory() as workdir:
            workers = {audio: round(worker_cpu_s(audio, args.seconds, Path(workdir)), 3) for audio in ("opus", "aac")}
        measured["node_worker_cpu_s"] = workers
        print(f"a real node's worker, one {args.seconds:.0f} s stream to mp4: " + ", ".join(
            f"{audio} {cpu:.2f} s ({100 * cpu / args.seconds:.2f}% of a core)" for audio, cpu in workers.items()))
    args.out.write_text(json.dumps(measured, indent=2) + "\n")


if __name__ == "__main__":
    main()
