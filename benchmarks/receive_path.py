"""CPU time of one worker's plain-RTP receive path per datagram, measured in-process.

The benchmark clip (720p30 H.264 at 2.5 Mb/s, 1200-byte packets, and mono Opus)
is sent over real UDP sockets on 127.0.0.1, paced as a publisher would send it,
to a real `RtpInput` whose frames go to `StreamRecordings` recording one mp4 task
to the node's disk: what a worker does, minus the control pipe. The worker side
runs as a worker does (one `call_later` tick every `workers.main.TICK_S` on an
asyncio loop); the publisher is a thread whose own CPU time is subtracted, so the
figure is the worker's process CPU time (user + system) per datagram, robust to
other load on the machine (CPU time, not wall-clock time).

    .venv/bin/python -m benchmarks.receive_path --seconds 20 [--srtp] [--profile out.prof]

`--profile` runs the worker side under cProfile (slower; shares, not absolute times).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import socket
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from contract.codes import MediaKind
from contract.storage import DestinationSpec, StorageTarget
from contract.tuning import MediaTuning
from contract.worker import RecordingSpec, StreamSpec, TrackSpec, WorkerConfig
from testkit.rtp.plan import plan
from testkit.rtp.spec import ClipSpec, PublisherSpec
from testkit.rtp.spec import TrackSpec as TrackTarget
from workers.inputs.rtp import RtpInput
from workers.main import TICK_S
from workers.recordings import StreamRecordings

CLIP = ClipSpec(width=1280, height=720, fps=30, keyint=60, bitrate_kbps=2500)
SRTP_SUITE = "AES_CM_128_HMAC_SHA1_80"


def _free_port_pair() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port % 4 == 0 and port < 65530:
            return port


def _schedule(seconds: float, srtp_keys: dict[str, bytes] | None) -> list[tuple[float, str, bytes]]:
    """(send time, kind, datagram) of the clip's first `seconds`, in send order."""
    target = TrackTarget(0, rtp=("127.0.0.1", 9))  # only says "send this track"; never used as an address
    spec = PublisherSpec(duration_s=40.0, clip=CLIP, seed=8, video=replace(target, payload_type=96),
                         audio=replace(target, payload_type=111))
    sent: list[tuple[float, str, bytes]] = []
    for kind, track in plan(spec).tracks.items():
        protect = None
        if srtp_keys is not None:
            from pylibsrtp import Policy, Session

            protect = Session(Policy(srtp_keys[kind], Policy.SSRC_ANY_OUTBOUND)).protect
        for send_time, packets in track.frames:
            if send_time < seconds:
                sent += [(send_time, kind, protect(p.datagram) if protect else p.datagram) for p in packets]
    sent.sort(key=lambda item: item[0])
    return sent


def _publish(schedule: list[tuple[float, str, bytes]], targets: dict[str, tuple[str, int]], start: float,
             cpu: list[float]) -> None:
    begin = time.thread_time()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for send_time, kind, datagram in schedule:
            delay = start + send_time - time.monotonic()
            if delay > 0.002:
                time.sleep(delay)
            sock.sendto(datagram, targets[kind])
    cpu.append(time.thread_time() - begin)


def measure(seconds: float, srtp: bool = False, profile: str | None = None) -> dict:
    keys = {kind: os.urandom(30) for kind in ("video", "audio")} if srtp else None
    schedule = _schedule(seconds, keys)
    port = _free_port_pair()

    def track(kind: MediaKind, codec: str, pt: int, rate: int, channels: int, name: str) -> TrackSpec:
        base = TrackSpec(kind, codec, pt, rate, channels)
        if keys is None:
            return base
        return replace(base, srtp_suite=SRTP_SUITE, srtp_remote_key=keys[name], srtp_local_key=os.urandom(30))

    stream = StreamSpec("bench", "s", "u", (track(MediaKind.VIDEO, "H264", 96, 90000, 1, "video"),
                                           track(MediaKind.AUDIO, "opus", 111, 48000, 1, "audio")))
    tuning = MediaTuning(sync_wait_for_sr_s=0)
    with tempfile.TemporaryDirectory() as root:
        storage = DestinationSpec(StorageTarget(0, "bucket", local_root=root), remote=False)
        spec = RecordingSpec("T" * 16, 3, "mp4", "rec/", 1, 15, storage)
        result = asyncio.run(_run(stream, tuning, port, spec, schedule, seconds, profile))
        result["file_bytes"] = sum(f.stat().st_size for f in Path(root).rglob("*.mp4"))
    return result


async def _run(stream, tuning, port, spec, schedule, seconds, profile) -> dict:
    events: list = []
    recordings = StreamRecordings(stream, tuning, events.append, lambda: True)
    rtp_input = RtpInput(WorkerConfig(stream, "127.0.0.1", (port, port + 2), tuning),
                         lambda frame: recordings.on_frame(frame, time.monotonic()), lambda *a: None)
    await rtp_input.start()
    recordings.start(spec, time.monotonic())
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    ticks = [0]

    def tick() -> None:
        if not done.is_set():
            loop.call_later(TICK_S, tick)
        ticks[0] += 1
        now = time.monotonic()
        rtp_input.tick(now)
        recordings.tick(now)

    publisher_cpu: list[float] = []
    start = time.monotonic() + 0.2
    targets = {"video": ("127.0.0.1", port), "audio": ("127.0.0.1", port + 2)}
    sender = threading.Thread(target=_publish, args=(schedule, targets, start, publisher_cpu))
    profiler = cProfile.Profile() if profile else None
    cpu0 = time.process_time()
    if profiler:
        profiler.enable()
    sender.start()
    loop.call_later(TICK_S, tick)
    await asyncio.to_thread(sender.join)  # no polling: the worker's loop wakes for its ticks only
    await asyncio.sleep(2 * TICK_S)
    done.set()
    rtp_input.tick(time.monotonic())
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile)
    worker_cpu = time.process_time() - cpu0 - publisher_cpu[0]
    stats = rtp_input.stats()
    rtp_input.close()
    await recordings.close_all()
    datagrams = sum(s["datagrams"] for s in stats.values())
    return {"seconds": seconds, "datagrams": datagrams, "sent": len(schedule), "ticks": ticks[0],
            "worker_cpu_s": round(worker_cpu, 4),
            "cpu_us_per_datagram": round(worker_cpu / max(datagrams, 1) * 1e6, 2),
            "cpu_pct_of_core": round(100 * worker_cpu / seconds, 3),
            "frames": {kind: s["frames"] for kind, s in stats.items()},
            "lost": {kind: s["jitter_lost_packets"] for kind, s in stats.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--srtp", action="store_true")
    parser.add_argument("--repeat", type=int, default=1, help="runs; the best (least CPU) is reported")
    parser.add_argument("--profile", help="write cProfile stats here")
    args = parser.parse_args(argv)
    runs = [measure(args.seconds, args.srtp, args.profile) for _ in range(args.repeat)]
    best = min(runs, key=lambda r: r["worker_cpu_s"])
    best["runs_us_per_datagram"] = [r["cpu_us_per_datagram"] for r in runs]
    print(json.dumps(best))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
