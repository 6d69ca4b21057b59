"""One benchmark level: N publishers, N rooms with one stream each, recorded by a
fresh node (and, with --ffmpeg, the same N streams remuxed by FFmpeg).

Timeline of a level
  1. start a node (own data dir); announce N streams (plain RTP: the SDP offer; WHIP:
     nothing, its publishers publish themselves); StartRecord a *main* task per room
     before any media flows, so every published frame belongs in its file;
  2. start N publisher processes (plus N plain-RTP twins for FFmpeg) with one common
     clock origin, staggered over one GOP so that key frames do not all coincide;
     wait until every stream is live (its Location and worker known);
  3. *probe*: once media flows, StartRecord a second task per room at a random
     point of the GOP and time how long until its first video frame is on disk
     (the worker's GOP cache answers this), then StopRecord it (-> durable, short);
  4. *window* (benchmarks.window): `seconds` of steady recording, sampled;
  5. when the publishers have sent the whole clip: stream counters (GET on the
     stream's Location), StopRecord the main tasks (-> durable, long), stop node;
  6. decode every file and compare with what each publisher sent (benchmarks.analysis).
"""

from __future__ import annotations

import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from benchmarks.analysis import decode_files, level_summary, stream_result
from benchmarks.config import LEAD_IN_S, MAIN_FOLDER, PROBE_FOLDER, TAIL_S, BenchConfig, Storage
from benchmarks.ffmpeg_ref import FfmpegRemux
from benchmarks.mp4scan import FragmentScanner
from benchmarks.node_calls import stop_until_durable, stream_stats, task_object_key
from benchmarks.percentiles import distribution
from benchmarks.procs import Pinning
from benchmarks.publishers import Announced, PublisherKind, RtpPublisher
from benchmarks.window import Window
from testkit.node import NodeProcess
from testkit.ports import free_port, free_udp_range
from testkit.rtp import PublisherSpec

LIVE_TIMEOUT_S = 20.0  # after its capture time 0, a stream that is not live yet is a failure


@dataclass
class Stream:
    index: int
    room: str
    stream_id: str
    announced: Announced | None = None
    location: str | None = ""
    spec: PublisherSpec | None = None
    process: Any = None
    main_task: str = ""
    main_file: str = ""
    scanner: FragmentScanner | None = None
    worker_pid: int | None = None
    start_time: float = 0.0  # time.time() of the clip's capture time 0
    first_frame_s: float | None = None
    probe_task: str = ""
    probe_start_api_s: float | None = None
    probe_durable: dict | None = None
    main_durable: dict | None = None
    max_lag_s: float = 0.0
    stats: dict = field(default_factory=dict)
    sent: dict = field(default_factory=dict)
    files: list = field(default_factory=list)
    # FFmpeg twin
    ff: FfmpegRemux | None = None
    ff_spec: PublisherSpec | None = None
    ff_process: Any = None
    ff_sent: dict = field(default_factory=dict)

    def frames_due(self, now_wall: float, fps: int, total: int) -> int:
        """Video frames the publisher has sent by now_wall (frame i at start + i/fps)."""
        if now_wall < self.start_time:
            return 0
        return min(total, int((now_wall - self.start_time) * fps) + 1)


class Level:
    def __init__(self, cfg: BenchConfig, n: int, storage: Storage, pinning: Pinning, kind: PublisherKind,
                 label: str):
        self.cfg, self.n, self.storage, self.pinning, self.kind, self.label = cfg, n, storage, pinning, kind, label
        self.twin = kind.twin()  # the plain-RTP sender of the streams FFmpeg remuxes (--ffmpeg)
        self.dir = cfg.workdir / f"{label}-n{n}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rng = random.Random(cfg.seed * 1000 + n)
        self.streams = [Stream(i, f"bench-{n}-{i}", f"cam{i}") for i in range(n)]
        self.samples: list[dict] = []
        self.node: NodeProcess | None = None
        self.total_frames = round(cfg.clip_s * cfg.clip.fps)

    def say(self, text: str) -> None:
        print(f"[{self.label} N={self.n}] {text}", flush=True)

    # -- set-up ------------------------------------------------------------

    def publisher_margin(self) -> float:
        """Seconds from starting the publisher processes to their first frame: every one
        must have imported its libraries, loaded the clip and connected by then."""
        def startup(kind) -> float:
            return kind.startup_cpu_s + kind.planning_cpu_s_per_clip_s * self.cfg.clip_s

        cpu_s = self.n * (startup(self.kind) + (startup(self.twin) if self.cfg.ffmpeg else 0.0))
        cores = max(1, len(self.pinning.load) or os.cpu_count() or 1)
        return 2.0 + self.kind.connect_s + cpu_s / cores * 1.3

    def start_node(self) -> None:
        size = max(200, 4 * self.n + 40)
        extra = self.kind.udp_ports(self.n)  # after the RTP range, for the kind (WebRTC's ICE ports)
        low, _ = free_udp_range(size + extra)
        kind_args = self.kind.node_args((low + size, low + size + extra - 1)) if extra else ()
        # a stream that sends nothing for --rtp-timeout s has left its room: the publishers of a
        # large N need longer than the default 10 s from announcement to their first packet
        timeout = max(10.0, 2 * self.publisher_margin() + 10)
        self.node = NodeProcess(self.dir / "data", free_port(), (low, low + size - 1), self.dir / "node.log",
                                extra_args=(*self.storage.node_args(), "--rtp-timeout", f"{timeout:.0f}",
                                            *kind_args, *self.cfg.node_args))
        with self.pinning.recorder_context():  # the node and every worker it forks run on the recorder CPUs
            self.node.start()

    def announce(self) -> None:
        base = self.cfg.publisher_spec()
        for s in self.streams:
            s.announced = self.kind.announce(self.node, s.room, s.stream_id, base)
            s.location, s.spec = s.announced.location, s.announced.spec
            s.main_task = self.node.ok("StartRecord", self.storage.body(s.room, MAIN_FOLDER))["TaskId"]

    def prepare_ffmpeg(self) -> None:
        low, _ = free_udp_range(4 * self.n)
        for s in self.streams:
            s.ff = FfmpegRemux(self.cfg.ffmpeg, self.dir, f"ffmpeg-{s.index}", low + 4 * s.index,
                               low + 4 * s.index + 2)

    def start_ffmpeg(self, first_packet_wall: float) -> None:
        """Start every ffmpeg shortly before the media: its SDP input gives up probing
        ("Connection timed out", video of unknown size dropped) after ~5 s without packets."""
        self.wait_until(first_packet_wall - 2.0)
        for s in self.streams:
            s.ff.start(self.cfg.publisher_spec(), "127.0.0.1", preexec_fn=self.pinning.recorder_preexec())
        time.sleep(0.5)
        for s in self.streams:
            if s.ff.process.poll() is not None:
                raise RuntimeError(f"ffmpeg exited at start: {s.ff.log_tail()}")

    def start_publishers(self) -> float:
        processes = self.n * (2 if self.cfg.ffmpeg else 1)
        margin = self.publisher_margin()
        origin = time.time() + margin
        stagger = self.cfg.gop_s / self.n
        for s in self.streams:
            s.start_time = origin + s.index * stagger
            s.spec = replace(s.spec, start_time=s.start_time, manifest_path=str(self.dir / f"pub-{s.index}.manifest"),
                             seed=self.cfg.seed * 100_000 + self.n * 100 + s.index)
            s.process = self.kind.start(s.spec, s.announced, preexec_fn=self.pinning.load_preexec())
            if s.ff is not None:
                s.ff_spec = RtpPublisher.with_rtp_targets(
                    replace(s.spec, manifest_path=str(self.dir / f"ffpub-{s.index}.pkl")), "127.0.0.1",
                    s.ff.video_port, s.ff.audio_port)
                s.ff_process = self.twin.start(s.ff_spec, preexec_fn=self.pinning.load_preexec())
        self.say(f"{processes} publisher processes started; media from {margin:.1f} s on, "
                 f"staggered by {stagger:.2f} s")
        return origin + (self.n - 1) * stagger

    def go_live(self) -> None:
        """Wait until every stream is published (a publisher that publishes itself reports
        its Location), then learn its worker."""
        for s in self.streams:
            timeout = s.start_time + LIVE_TIMEOUT_S - time.time()
            s.location = self.kind.live(s.announced, s.spec, s.process, timeout)
            s.worker_pid = self.node.stream_stats(s.location).get("WorkerPid")

    def wait_until(self, wall: float) -> None:
        while (left := wall - time.time()) > 0:
            for s in self.streams:
                if s.process.poll() not in (None, 0):
                    raise RuntimeError(f"publisher {s.index} exited with {s.process.returncode}")
            time.sleep(min(left, 0.2))

    # -- probes ------------------------------------------------------------

    def probe(self, s: Stream) -> None:
        """StartRecord while the stream is live -> first video frame on disk."""
        time.sleep(self.rng.uniform(0, self.cfg.gop_s))  # a random point of the GOP
        began = time.monotonic()
        task_id = self.node.ok("StartRecord", self.storage.body(s.room, PROBE_FOLDER))["TaskId"]
        s.probe_start_api_s = round(time.monotonic() - began, 4)
        scanner = None
        deadline = began + 15
        while time.monotonic() < deadline:
            if scanner is None:
                file_id = task_object_key(self.node, task_id, PROBE_FOLDER)
                path = file_id and self.storage.local_path(self.node, file_id)
                scanner = FragmentScanner(path) if path else None
                if scanner is None:
                    time.sleep(0.02)  # the file is not opened yet: ask again soon, not in a tight loop
                    continue
            if scanner.update() > 0:
                s.first_frame_s = round(scanner.first_video_mono - began, 4)
                break
            time.sleep(0.005)
        s.probe_task = task_id

    def run_probes(self) -> None:
        with ThreadPoolExecutor(self.n) as pool:
            list(pool.map(self.probe, self.streams))
        with ThreadPoolExecutor(self.n) as pool:
            results = list(pool.map(lambda s: stop_until_durable(self.node, s.probe_task), self.streams))
        for s, result in zip(self.streams, results):
            s.probe_durable = result
        values = [s.first_frame_s for s in self.streams]
        missing = sum(v is None for v in values)
        dist = distribution(values)
        self.say(f"StartRecord -> first video frame on disk: p50 {dist.get('p50')} s, p95 {dist.get('p95')} s"
                 + (f", {missing} never" if missing else ""))

    # -- wrap-up -----------------------------------------------------------

    def finish_publishers(self) -> None:
        timeout = max(30.0, self.streams[-1].start_time + self.cfg.clip_s - time.time() + 30)
        for s in self.streams:
            s.sent = self.kind.sent(s.spec, s.process, timeout)
            if s.ff_process is not None:
                s.ff_sent = self.twin.sent(s.ff_spec, s.ff_process, timeout)
        time.sleep(1.0)  # the jitter buffer releases the last frames

    def stop_main_tasks(self) -> None:
        for s in self.streams:
            s.scanner and s.scanner.update()
            s.stats = stream_stats(self.node, s.location)
        with ThreadPoolExecutor(self.n) as pool:
            results = list(pool.map(lambda s: stop_until_durable(self.node, s.main_task), self.streams))
        for s, result in zip(self.streams, results):
            s.main_durable = result
        durable = distribution([s.main_durable["durable_s"] for s in self.streams])
        self.say(f"StopRecord -> durable ({self.cfg.seconds:.0f}+ s recordings): p50 {durable.get('p50')} s, "
                 f"max {durable.get('max')} s")

    # -- all of it -----------------------------------------------------------

    def run(self) -> dict:
        cfg = self.cfg
        clip = cfg.clip
        self.say(f"node + {self.n} {self.kind.name} stream(s) of {clip.width}x{clip.height}@{clip.fps} "
                 f"{clip.bitrate_kbps} kbps, {cfg.storage} storage" + (", with ffmpeg" if cfg.ffmpeg else ""))
        self.start_node()
        try:
            measured = self.record()
        finally:
            for s in self.streams:
                for process in (s.process, s.ff_process):
                    if process is not None and process.poll() is None:
                        process.terminate()
                if s.ff is not None and s.ff.process is not None and s.ff.process.poll() is None:
                    s.ff.stop()
            self.node.stop()
        files_dir = self.dir / "files"
        files_dir.mkdir(exist_ok=True)
        self.say("decoding every file")
        decoded = decode_files(self.streams, self.storage, self.node, files_dir, self.pinning)
        streams = [stream_result(s, mine, ff, cfg.clip.fps, self.kind.counters) for s, mine, ff in decoded]
        result = level_summary(self.n, measured, streams, self.samples)
        d = result["defects"]
        self.say(f"done: cpu {measured['cpu']['per_stream_pct']:.2f}%/stream, worker uss "
                 f"{measured['memory']['uss_mb_mean']} MB, defects in {d['streams_with_defects']} of {self.n} streams"
                 + (f" {d['details']}" if d["count"] else ""))
        return result

    def record(self) -> dict:
        cfg = self.cfg
        self.announce()
        if cfg.ffmpeg:
            self.prepare_ffmpeg()
        last_start = self.start_publishers()
        if cfg.ffmpeg:
            self.start_ffmpeg(self.streams[0].start_time)
        self.go_live()
        self.wait_until(last_start + LEAD_IN_S)
        probe_began = time.time()
        self.run_probes()
        time.sleep(0.5)
        # the window must end before the first publisher's clip does
        available = self.streams[0].start_time + cfg.clip_s - TAIL_S - time.time()
        seconds = min(cfg.seconds, available)
        if seconds < 1:
            raise RuntimeError(f"probes took {time.time() - probe_began:.1f} s: no time left to measure "
                               f"(see {self.dir / 'node.log'})")
        if seconds < cfg.seconds:
            self.say(f"probes took {time.time() - probe_began:.1f} s: window shortened to {seconds:.1f} s")
        window = Window(cfg, self.node, self.storage, self.pinning, self.streams, self.total_frames, self.label,
                        self.say)
        measured = window.run(seconds)
        self.samples = window.samples
        self.say("waiting for the publishers to send the rest of the clip")
        self.finish_publishers()
        self.stop_main_tasks()
        for s in self.streams:
            if s.ff is not None:
                s.ff.stop()
            self.node.unpublish(s.location)
        return measured
