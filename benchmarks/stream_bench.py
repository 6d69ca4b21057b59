"""One benchmark level: N publishers, N rooms with one stream each, recorded by a
fresh node (and, with --ffmpeg, the same N streams remuxed by FFmpeg).

Timeline of a level
  1. start a node (own data dir); announce N streams; StartRecord a *main* task
     per room before any media flows, so every published frame belongs in its file;
  2. start N publisher processes (plus N twins for FFmpeg) with one common clock
     origin, staggered over one GOP so that key frames do not all coincide;
  3. *probe*: once media flows, StartRecord a second task per room at a random
     point of the GOP and time how long until its first video frame is on disk
     (the worker's GOP cache answers this), then StopRecord it (-> durable, short);
  4. *window*: `seconds` of steady recording, sampled every `sample_interval`:
     CPU of the node's process tree (node, fork server, workers; the publishers
     are not in it), USS/PSS per worker, how far each file on disk lags behind
     what was published;
  5. when the publishers have sent the whole clip: stream counters (GET on the
     stream's Location), StopRecord the main tasks (-> durable, long), stop node;
  6. decode every file and compare with what each publisher sent.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

from benchmarks.ffmpeg_ref import FfmpegRemux
from benchmarks.mp4scan import FragmentScanner
from benchmarks.procs import CpuWindow, Pinning, memory
from benchmarks.publishers import PublisherKind, RtpPublisher
from tests.helpers.api import NodeProcess, free_port, free_udp_range, start_record_body
from tests.helpers.rtp_publisher import PublisherSpec

PROBE_BUDGET_S = 6.0  # clip time reserved for the first-frame probes
LEAD_IN_S = 1.0  # media before the probes start (publishers all sending)
TAIL_S = 2.0  # clip time after the window
PUBLISHER_STARTUP_CPU_S = 0.7  # measured: import + load the cached clip, per publisher
# defect thresholds
MAX_RELEASE_DELAY_S = 0.3  # the jitter buffer waits 250 ms at most for a lost packet
MAX_DISK_LAG_S = 2.5  # fragments are cut at least every second (+ one GOP boundary + jitter)
MAX_PUBLISHER_LATENESS_S = 0.2  # beyond this the load generator, not the node, is the problem


@dataclass
class BenchConfig:
    publisher: str = "rtp"
    storage: str = "disk"
    seconds: float = 30.0
    width: int = 1280
    height: int = 720
    fps: int = 30
    keyint: int = 60
    bitrate_kbps: int = 2500
    sample_interval: float = 2.0
    ffmpeg: str | None = None  # the ffmpeg binary when comparing
    profile_seconds: float = 0.0  # py-spy a worker for this long during the window
    profile_dir: Path = Path("/tmp")  # where py-spy's raw stacks are kept (the results folder)
    node_args: tuple[str, ...] = ()  # more `recnode serve` options (admission limits)
    workdir: Path = Path("/tmp")
    seed: int = 8

    @property
    def gop_s(self) -> float:
        return self.keyint / self.fps

    @property
    def clip_s(self) -> int:
        # whole seconds, so runs of the same length share the clip cached on disk
        return int(round(LEAD_IN_S + PROBE_BUDGET_S + self.seconds + TAIL_S + 1))

    def publisher_spec(self, **over) -> PublisherSpec:
        return PublisherSpec(duration_s=self.clip_s, fps=self.fps, keyint=self.keyint, width=self.width,
                             height=self.height, bitrate_kbps=self.bitrate_kbps, **over)


@dataclass
class Storage:
    """Where the main and probe tasks write: the node's disk, or S3 (moto)."""

    kind: str  # disk | s3
    moto: Any = None
    bucket: str = "recnode-bench"

    def node_args(self) -> tuple[str, ...]:
        return ("--storage-endpoint", f"1={self.moto.endpoint}") if self.kind == "s3" else ()

    def body(self, room: str, folder: str) -> dict:
        body = start_record_body(room, bucket=self.bucket)
        body["RecordOutputParams"]["OutputFolder"] = folder
        if self.kind == "s3":
            body["StorageParams"] = {"Vendor": 1, "Region": "us-east-1", "Bucket": self.bucket,
                                     "AccessKeyId": self.moto.access_key_id,
                                     "AccessKeySecret": self.moto.access_key_secret}
        return body

    def local_path(self, node: NodeProcess, file_id: str) -> Path | None:
        """Where the bytes of an object being recorded are on this machine: the file
        itself on node disk, its spool entry for a bucket."""
        if self.kind == "disk":
            return node.data_dir / "storage" / self.bucket / file_id
        spool = node.data_dir / "spool"
        for meta in spool.glob("*/meta.json"):
            try:
                if json.loads(meta.read_text()).get("key") == file_id:
                    return meta.parent / "data"
            except (OSError, ValueError):
                continue
        return None

    def fetch(self, node: NodeProcess, file_id: str, into: Path) -> Path:
        """The finished object as a local file, to decode."""
        if self.kind == "disk":
            return node.data_dir / "storage" / self.bucket / file_id
        target = into / file_id.replace("/", "_")
        body = self.moto.client().get_object(Bucket=self.bucket, Key=file_id)["Body"].read()
        target.write_bytes(body)
        return target


@dataclass
class Stream:
    index: int
    room: str
    stream_id: str
    location: str = ""
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


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def distribution(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": round(percentile(values, 50), 4), "p95": round(percentile(values, 95), 4),
            "p99": round(percentile(values, 99), 4), "max": round(max(values), 4),
            "mean": round(statistics.fmean(values), 4)}


def pid_memory(pid: int) -> tuple[float, float] | None:
    try:
        return memory(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return None


def admission_args(mode: str, n: int) -> tuple[str, ...]:
    """`recnode serve` options that keep the node's admission control out of the way
    (mode "off": the benchmark measures how much the node can record, not where it is
    configured to stop), for the options this node has."""
    if mode != "off":
        return ()
    import subprocess
    import sys

    from tests.helpers.api import REPO

    help_text = subprocess.run([sys.executable, "-m", "engine.cli", "serve", "--help"], cwd=REPO,
                               capture_output=True, text=True, timeout=60).stdout
    wanted = {"--max-streams": str(4 * n + 16), "--max-tasks": str(100_000), "--cpu-cap": "1.0"}
    return tuple(part for option, value in wanted.items() if option in help_text for part in (option, value))


# --------------------------------------------------------------------------
# API helpers


def stop_until_durable(node: NodeProcess, task_id: str, timeout: float = 120) -> dict:
    """StopRecord, then poll until every file of the task is durable (Status 3)."""
    began = time.monotonic()
    node.ok("StopRecord", {"TaskId": task_id})
    answered = time.monotonic() - began
    deadline = began + timeout
    while True:
        data = node.ok("DescribeRecordStatus", {"TaskId": task_id})
        files = data.get("RecordFiles") or []
        if files and all(f["Status"] == 3 for f in files):
            return {"stop_api_s": round(answered, 4), "durable_s": round(time.monotonic() - began, 4),
                    "files": files}
        if time.monotonic() > deadline:
            return {"stop_api_s": round(answered, 4), "durable_s": None, "files": files, "timeout": True}
        time.sleep(0.02)


def task_file_id(node: NodeProcess, task_id: str) -> str | None:
    files = node.ok("DescribeRecordStatus", {"TaskId": task_id}).get("RecordFiles") or []
    return files[0]["FileId"] if files else None


# --------------------------------------------------------------------------
# Analysis (runs in a process pool after the node stopped)


def summarize_file(path: str) -> dict:
    from tests.helpers.probe import decode_all

    report = decode_all(path)
    pts = report.video_pts_s
    steps = [b - a for a, b in zip(pts, pts[1:])]
    return {"path": path, "video_frames": report.video_frames, "audio_frames": report.audio_frames,
            "video_first_s": report.video_first_s, "video_last_s": report.video_last_s,
            "max_video_step_s": round(max(steps), 4) if steps else None,
            "errors": list(report.errors[:5]), "bytes": os.path.getsize(path)}


def sent_summary(manifest) -> dict:
    """What a publisher sent, and how punctual it was."""
    out: dict[str, Any] = {"completed": manifest.completed}
    lateness = []
    for kind in ("video", "audio"):
        packets = manifest.track_packets(kind, include_dropped=False)
        frames = sorted({p.frame_index for p in packets})
        captures = sorted({p.capture_time_s for p in packets})
        out[kind] = {"packets": len(packets), "frames": len(frames),
                     "first_capture_s": captures[0] if captures else None,
                     "last_capture_s": captures[-1] if captures else None}
        lateness += [p.sent_mono - (manifest.t0_mono + p.capture_time_s) for p in packets if p.sent_mono]
    # the file starts on the first key frame: Opus captured before it is left out by design
    video_start = out["video"]["first_capture_s"] or 0.0
    out["audio"]["frames_from_video_start"] = len({p.frame_index for p in manifest.track_packets("audio", False)
                                                   if p.capture_time_s >= video_start - 1e-9})
    out["lateness"] = distribution(lateness)
    return out


# --------------------------------------------------------------------------
# The level


class Level:
    def __init__(self, cfg: BenchConfig, n: int, storage: Storage, pinning: Pinning, kind: PublisherKind,
                 label: str):
        self.cfg, self.n, self.storage, self.pinning, self.kind, self.label = cfg, n, storage, pinning, kind, label
        self.dir = cfg.workdir / f"{label}-n{n}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rng = random.Random(cfg.seed * 1000 + n)
        self.streams = [Stream(i, f"bench-{n}-{i}", f"cam{i}") for i in range(n)]
        self.samples: list[dict] = []
        self.node: NodeProcess | None = None
        self.total_frames = round(cfg.clip_s * cfg.fps)

    def say(self, text: str) -> None:
        print(f"[{self.label} N={self.n}] {text}", flush=True)

    # -- set-up ------------------------------------------------------------

    def publisher_margin(self) -> float:
        """Seconds from starting the publisher processes to their first packet: every one
        must have imported its libraries and loaded the clip by then."""
        processes = self.n * (2 if self.cfg.ffmpeg else 1)
        cores = max(1, len(self.pinning.load) or os.cpu_count() or 1)
        return 2.0 + PUBLISHER_STARTUP_CPU_S * processes / cores * 1.3

    def start_node(self) -> None:
        size = max(200, 4 * self.n + 40)
        # a stream that sends nothing for --rtp-timeout s has left its room: the publishers of a
        # large N need longer than the default 10 s from announcement to their first packet
        timeout = max(10.0, 2 * self.publisher_margin() + 10)
        self.node = NodeProcess(self.dir / "data", free_port(), free_udp_range(size), self.dir / "node.log",
                                extra_args=(*self.storage.node_args(), "--rtp-timeout", f"{timeout:.0f}",
                                            *self.cfg.node_args))
        with self.pinning.recorder_context():  # the node and every worker it forks run on the recorder CPUs
            self.node.start()

    def announce(self) -> None:
        base = self.cfg.publisher_spec()
        for s in self.streams:
            announced = self.kind.announce(self.node, s.room, s.stream_id, base)
            s.location, s.spec = announced.location, announced.spec
            s.main_task = self.node.ok("StartRecord", self.storage.body(s.room, "main/"))["TaskId"]
            s.worker_pid = self.node.stream_stats(s.location).get("WorkerPid")

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
            s.spec = replace(s.spec, start_time=s.start_time, manifest_path=str(self.dir / f"pub-{s.index}.pkl"),
                             seed=self.cfg.seed * 100_000 + self.n * 100 + s.index)
            s.process = self.kind.start(s.spec, preexec_fn=self.pinning.load_preexec())
            if s.ff is not None:
                s.ff_spec = RtpPublisher.with_rtp_targets(
                    replace(s.spec, manifest_path=str(self.dir / f"ffpub-{s.index}.pkl")), "127.0.0.1",
                    s.ff.video_port, s.ff.audio_port)
                s.ff_process = RtpPublisher().start(s.ff_spec, preexec_fn=self.pinning.load_preexec())
        self.say(f"{processes} publisher processes started; media from {margin:.1f} s on, "
                 f"staggered by {stagger:.2f} s")
        return origin + (self.n - 1) * stagger

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
        task_id = self.node.ok("StartRecord", self.storage.body(s.room, "probe/"))["TaskId"]
        s.probe_start_api_s = round(time.monotonic() - began, 4)
        scanner = None
        deadline = began + 15
        while time.monotonic() < deadline:
            if scanner is None:
                file_id = task_file_id(self.node, task_id)
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

    # -- window ------------------------------------------------------------

    def scan_lag(self, now_wall: float) -> float:
        worst = 0.0
        for s in self.streams:
            if s.scanner is None:
                file_id = task_file_id(self.node, s.main_task)
                path = file_id and self.storage.local_path(self.node, file_id)
                if not path:
                    continue
                s.main_file, s.scanner = file_id, FragmentScanner(path)
            on_disk = s.scanner.update()
            lag = (s.frames_due(now_wall, self.cfg.fps, self.total_frames) - on_disk) / self.cfg.fps
            s.max_lag_s = max(s.max_lag_s, lag)
            worst = max(worst, lag)
        return worst

    def window(self, seconds: float) -> dict:
        workers = {s.worker_pid for s in self.streams if s.worker_pid}
        node_pid = self.node.process.pid
        ours = CpuWindow([node_pid])
        ff = CpuWindow([s.ff.process.pid for s in self.streams if s.ff]) if self.cfg.ffmpeg else None
        load = CpuWindow([p.pid for s in self.streams for p in (s.process, s.ff_process) if p is not None])
        profiler = self.start_profiler()
        self.scan_lag(time.time())
        ours.start()
        load.start()
        psutil.cpu_percent(None)  # whole-machine busy % from here on
        if ff:
            ff.start()
        first_memory: dict[int, tuple[float, float]] = {}
        next_at = time.monotonic()
        end_at = time.monotonic() + seconds
        while True:
            next_at = min(next_at + self.cfg.sample_interval, end_at)
            time.sleep(max(0.0, next_at - time.monotonic()))
            ours.sample()
            load.sample()
            if ff:
                ff.sample()
            mem = {pid: m for pid in workers if (m := pid_memory(pid)) is not None}
            for pid, m in mem.items():
                first_memory.setdefault(pid, m)
            node_mem = pid_memory(node_pid)
            lag = self.scan_lag(time.time())
            elapsed = ours.elapsed()
            total = ours.percent()
            sample = {"t": round(elapsed, 2), "cpu_pct": round(total, 2), "cpu_pct_per_stream": round(total / self.n, 3),
                      "workers_cpu_pct": round(ours.percent(workers), 2),
                      "uss_mb": {str(p): round(m[0], 2) for p, m in mem.items()},
                      "pss_mb": {str(p): round(m[1], 2) for p, m in mem.items()},
                      "node_uss_mb": round(node_mem[0], 2) if node_mem else None,
                      "max_lag_s": round(lag, 3), "publishers_cpu_pct": round(load.percent(), 2)}
            if ff:
                sample["ffmpeg_cpu_pct"] = round(ff.percent(), 2)
            self.samples.append(sample)
            uss = statistics.fmean(m[0] for m in mem.values()) if mem else 0.0
            pss = statistics.fmean(m[1] for m in mem.values()) if mem else 0.0
            line = (f"{elapsed:5.1f}/{seconds:.0f} s  streams {self.n}  cpu {total:5.1f}% "
                    f"({total / self.n:.2f}%/stream)  worker uss {uss:.1f} MB pss {pss:.1f} MB  "
                    f"node uss {sample['node_uss_mb']} MB  disk lag <= {lag:.2f} s  publishers cpu {load.percent():.0f}%")
            if ff:
                line += f"  | ffmpeg cpu {ff.percent():5.1f}% ({ff.percent() / self.n:.2f}%/stream)"
            self.say(line)
            if time.monotonic() >= end_at - 1e-3:
                break
        profile = self.stop_profiler(profiler)
        last = self.samples[-1] if self.samples else {}
        per_worker = []
        for pid in sorted(workers):
            key = str(pid)
            if key in last.get("uss_mb", {}):
                uss0, pss0 = first_memory[pid]
                per_worker.append({"pid": pid, "uss_mb": last["uss_mb"][key], "pss_mb": last["pss_mb"][key],
                                   "uss_growth_mb": round(last["uss_mb"][key] - uss0, 2),
                                   "pss_growth_mb": round(last["pss_mb"][key] - pss0, 2)})
        worker_cpu = ours.percent(workers)
        node_cpu = ours.percent({node_pid})
        result = {
            "window_s": round(ours.elapsed(), 2),
            "cpu": {"total_pct": round(ours.percent(), 2), "per_stream_pct": round(ours.percent() / self.n, 3),
                    "workers_pct": round(worker_cpu, 2), "node_pct": round(node_cpu, 2),
                    "other_pct": round(ours.percent() - worker_cpu - node_cpu, 2),
                    "per_worker_pct": round(worker_cpu / max(1, len(workers)), 3),
                    "workers_system_share": round(ours.system_share(workers) or 0.0, 3)},
            "memory": {
                "per_worker": per_worker,
                "uss_mb_mean": round(statistics.fmean(w["uss_mb"] for w in per_worker), 2) if per_worker else None,
                "uss_mb_max": max((w["uss_mb"] for w in per_worker), default=None),
                "pss_mb_mean": round(statistics.fmean(w["pss_mb"] for w in per_worker), 2) if per_worker else None,
                "pss_mb_max": max((w["pss_mb"] for w in per_worker), default=None),
                "uss_growth_mb_max": max((w["uss_growth_mb"] for w in per_worker), default=None),
                "uss_growth_mb_per_min_max": (round(max(w["uss_growth_mb"] for w in per_worker) * 60
                                                    / max(1e-9, ours.elapsed()), 3) if per_worker else None),
                "node_uss_mb": last.get("node_uss_mb"),
            },
            "profile": profile,
            "publishers_cpu_pct": round(load.percent(), 2),
            "machine_busy_pct": round(psutil.cpu_percent(None), 1),
        }
        if ff:
            result["ffmpeg_cpu"] = {"total_pct": round(ff.percent(), 2), "per_stream_pct": round(ff.percent() / self.n, 3),
                                    "system_share": round(ff.system_share() or 0.0, 3)}
        return result

    # -- profiling -----------------------------------------------------------

    def start_profiler(self):
        if not self.cfg.profile_seconds or not self.streams[0].worker_pid:
            return None
        from benchmarks.profile import PySpy

        self.cfg.profile_dir.mkdir(parents=True, exist_ok=True)
        raw = self.cfg.profile_dir / f"{self.label}-n{self.n}-worker-profile.txt"
        spy = PySpy(self.streams[0].worker_pid, raw, self.cfg.profile_seconds, preexec_fn=self.pinning.load_preexec())
        spy.start()
        self.say(f"profiling worker {spy.pid} with py-spy for {self.cfg.profile_seconds:.0f} s")
        return spy

    def stop_profiler(self, spy) -> dict | None:
        if spy is None:
            return None
        return spy.finish()

    # -- wrap-up -----------------------------------------------------------

    def finish_publishers(self) -> None:
        timeout = max(30.0, self.streams[-1].start_time + self.cfg.clip_s - time.time() + 30)
        for s in self.streams:
            s.sent = sent_summary(self.kind.manifest(s.spec, s.process, timeout))
            if s.ff_process is not None:
                s.ff_sent = sent_summary(RtpPublisher().manifest(s.ff_spec, s.ff_process, timeout))
        time.sleep(1.0)  # the jitter buffer releases the last frames

    def stop_main_tasks(self) -> None:
        for s in self.streams:
            s.scanner and s.scanner.update()
            s.stats = self.node.stream_stats(s.location)
        with ThreadPoolExecutor(self.n) as pool:
            results = list(pool.map(lambda s: stop_until_durable(self.node, s.main_task), self.streams))
        for s, result in zip(self.streams, results):
            s.main_durable = result
        durable = distribution([s.main_durable["durable_s"] for s in self.streams])
        self.say(f"StopRecord -> durable ({self.cfg.seconds:.0f}+ s recordings): p50 {durable.get('p50')} s, "
                 f"max {durable.get('max')} s")

    def analyse(self, files_dir: Path) -> list[dict]:
        jobs: list[tuple[Stream, str, str]] = []  # (stream, role, path)
        for s in self.streams:
            for entry in s.main_durable["files"]:
                jobs.append((s, "node", str(self.storage.fetch(self.node, entry["FileId"], files_dir))))
            if s.ff is not None:
                jobs.append((s, "ffmpeg", str(s.ff.output)))
        all_cpus = set(range(os.cpu_count() or 1))
        os.sched_setaffinity(0, all_cpus)  # the node is gone: decode on every core
        try:
            with ProcessPoolExecutor(max(1, len(all_cpus))) as pool:
                reports = list(pool.map(summarize_file, [path for _, _, path in jobs]))
        finally:
            self.pinning.as_load()
        out = []
        for s in self.streams:
            mine = [r for (owner, role, _), r in zip(jobs, reports) if owner is s and role == "node"]
            ff = [r for (owner, role, _), r in zip(jobs, reports) if owner is s and role == "ffmpeg"]
            out.append(self.stream_result(s, mine, ff[0] if ff else None))
        return out

    def stream_result(self, s: Stream, files: list[dict], ff: dict | None) -> dict:
        fps = self.cfg.fps
        defects = []
        video_sent, audio_sent = s.sent["video"]["frames"], s.sent["audio"]["frames_from_video_start"]
        if len(files) != 1:
            defects.append(f"{len(files)} files instead of 1")
        report = files[0] if files else {"video_frames": 0, "audio_frames": 0, "max_video_step_s": None,
                                        "errors": ["no file"], "video_first_s": None, "video_last_s": None}
        if report["video_frames"] != video_sent:
            defects.append(f"video frames {report['video_frames']} of {video_sent} sent")
        if report["audio_frames"] != audio_sent:
            defects.append(f"audio frames {report['audio_frames']} of {audio_sent} sent")
        if report["errors"]:
            defects.append(f"decode errors: {report['errors'][:2]}")
        step = report["max_video_step_s"]
        if step is None or step > 2.0 / fps + 1e-6:
            defects.append(f"video gap: largest pts step {step} s")
        sent_span = (s.sent["video"]["last_capture_s"] or 0) - (s.sent["video"]["first_capture_s"] or 0)
        file_span = ((report["video_last_s"] or 0) - (report["video_first_s"] or 0)) if report["video_first_s"] is not None else 0
        if sent_span - file_span > 1.0 / fps + 1e-6:
            defects.append(f"file ends {sent_span - file_span:.3f} s before the last frame sent")
        tracks = s.stats.get("Tracks", {})
        for kind in ("video", "audio"):
            t = tracks.get(kind, {})
            if t.get("datagrams", 0) < s.sent[kind]["packets"]:
                defects.append(f"{kind}: {t.get('datagrams', 0)} of {s.sent[kind]['packets']} RTP packets received")
            if t.get("jitter_lost_packets", 0):
                defects.append(f"{kind}: {t['jitter_lost_packets']} packets lost")
            if t.get("max_release_delay_s", 0) > MAX_RELEASE_DELAY_S:
                defects.append(f"{kind}: frames waited up to {t['max_release_delay_s']} s (worker behind)")
        if s.max_lag_s > MAX_DISK_LAG_S:
            defects.append(f"file on disk lagged {s.max_lag_s:.2f} s behind the publisher (worker behind)")
        if s.main_durable.get("durable_s") is None:
            defects.append("files not durable in time after StopRecord")
        warnings = []
        late = s.sent["lateness"].get("max") or 0
        if late > MAX_PUBLISHER_LATENESS_S:
            warnings.append(f"publisher sent up to {late:.3f} s late (load generator overloaded)")
        result = {
            "index": s.index, "room": s.room, "worker_pid": s.worker_pid,
            "sent": {k: s.sent[k] for k in ("video", "audio")}, "publisher_lateness_s": s.sent["lateness"],
            "file": report, "max_disk_lag_s": round(s.max_lag_s, 3),
            "max_release_delay_s": {k: tracks.get(k, {}).get("max_release_delay_s") for k in ("video", "audio")},
            "received": {k: {f: tracks.get(k, {}).get(f) for f in ("datagrams", "jitter_lost_packets", "frames")}
                         for k in ("video", "audio")},
            "first_frame_s": s.first_frame_s, "probe_start_api_s": s.probe_start_api_s,
            "probe_stop": {k: v for k, v in (s.probe_durable or {}).items() if k != "files"},
            "main_stop": {k: v for k, v in (s.main_durable or {}).items() if k != "files"},
            "defects": defects, "warnings": warnings,
        }
        if ff is not None:
            ff_defects = []
            if ff["video_frames"] != s.ff_sent["video"]["frames"]:
                ff_defects.append(f"video frames {ff['video_frames']} of {s.ff_sent['video']['frames']} sent")
            if ff["audio_frames"] < s.ff_sent["audio"]["frames_from_video_start"]:
                ff_defects.append(f"audio frames {ff['audio_frames']} of {s.ff_sent['audio']['frames']} sent")
            result["ffmpeg"] = {"file": ff, "defects": ff_defects}
        return result

    # -- all of it -----------------------------------------------------------

    def run(self) -> dict:
        cfg = self.cfg
        self.say(f"node + {self.n} {self.kind.name} stream(s) of {cfg.width}x{cfg.height}@{cfg.fps} "
                 f"{cfg.bitrate_kbps} kbps, {cfg.storage} storage" + (", with ffmpeg" if cfg.ffmpeg else ""))
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
        streams = self.analyse(files_dir)
        return self.summarize(measured, streams)

    def record(self) -> dict:
        cfg = self.cfg
        self.announce()
        if cfg.ffmpeg:
            self.prepare_ffmpeg()
        last_start = self.start_publishers()
        if cfg.ffmpeg:
            self.start_ffmpeg(self.streams[0].start_time)
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
        measured = self.window(seconds)
        self.say("waiting for the publishers to send the rest of the clip")
        self.finish_publishers()
        self.stop_main_tasks()
        for s in self.streams:
            if s.ff is not None:
                s.ff.stop()
            self.node.unpublish(s.location)
        return measured

    def summarize(self, measured: dict, streams: list[dict]) -> dict:
        defective = [s for s in streams if s["defects"]]
        first = [s["first_frame_s"] for s in streams]
        result = {
            "n": self.n, **measured,
            "first_frame_s": {**distribution(first), "never": sum(v is None for v in first)},
            "start_record_api_s": distribution([s["probe_start_api_s"] for s in streams]),
            "stop_to_durable_s": {
                "short": distribution([s["probe_stop"].get("durable_s") for s in streams]),
                "long": distribution([s["main_stop"].get("durable_s") for s in streams]),
            },
            "stop_record_api_s": distribution([s["main_stop"].get("stop_api_s") for s in streams]
                                              + [s["probe_stop"].get("stop_api_s") for s in streams]),
            "max_disk_lag_s": max(s["max_disk_lag_s"] for s in streams),
            "max_release_delay_s": max((v or 0) for s in streams for v in s["max_release_delay_s"].values()),
            "defects": {"streams_with_defects": len(defective), "count": sum(len(s["defects"]) for s in streams),
                        "details": {str(s["index"]): s["defects"] for s in defective}},
            "warnings": [w for s in streams for w in s["warnings"]],
            "publisher_lateness_max_s": max((s["publisher_lateness_s"].get("max") or 0) for s in streams),
            "samples": self.samples,
            "streams": streams,
        }
        if "ffmpeg_cpu" in measured:
            ours, theirs = measured["cpu"]["per_stream_pct"], measured["ffmpeg_cpu"]["per_stream_pct"]
            result["ffmpeg_cpu"]["ratio_ours_to_ffmpeg"] = round(ours / theirs, 3) if theirs else None
            result["ffmpeg_cpu"]["streams_with_defects"] = sum(bool(s["ffmpeg"]["defects"]) for s in streams)
            result["ffmpeg_cpu"]["defects"] = {str(s["index"]): s["ffmpeg"]["defects"] for s in streams
                                               if s["ffmpeg"]["defects"]}
        d = result["defects"]
        self.say(f"done: cpu {measured['cpu']['per_stream_pct']:.2f}%/stream, worker uss "
                 f"{measured['memory']['uss_mb_mean']} MB, defects in {d['streams_with_defects']} of {self.n} streams"
                 + (f" {d['details']}" if d["count"] else ""))
        return result
