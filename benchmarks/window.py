"""The measured window of a level: `seconds` of steady recording, sampled every
`sample_interval` with a progress line: CPU of the node's process tree (node, fork
server, workers; the publishers are not in it), USS/PSS per worker, how far each
file on disk lags behind what its publisher has sent; optionally py-spy on a worker."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import psutil

from benchmarks.config import MAIN_FOLDER, BenchConfig, Storage
from benchmarks.mp4scan import FragmentScanner
from benchmarks.node_calls import task_object_key
from benchmarks.procs import CpuWindow, Pinning, memory
from testkit.node import NodeProcess


def pid_memory(pid: int) -> tuple[float, float] | None:
    try:
        return memory(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return None


class Window:
    def __init__(self, cfg: BenchConfig, node: NodeProcess, storage: Storage, pinning: Pinning, streams: list,
                 total_frames: int, label: str, say: Callable[[str], None]):
        self.cfg, self.node, self.storage, self.pinning = cfg, node, storage, pinning
        self.streams, self.n, self.total_frames, self.label, self.say = streams, len(streams), total_frames, label, say
        self.samples: list[dict] = []

    def scan_lag(self, now_wall: float) -> float:
        """Largest lag (s) of a main file on disk behind what its publisher has sent by now."""
        worst = 0.0
        for s in self.streams:
            if s.scanner is None:
                file_id = task_object_key(self.node, s.main_task, MAIN_FOLDER)
                path = file_id and self.storage.local_path(self.node, file_id)
                if not path:
                    continue
                s.main_file, s.scanner = file_id, FragmentScanner(path)
            on_disk = s.scanner.update()
            lag = (s.frames_due(now_wall, self.cfg.clip.fps, self.total_frames) - on_disk) / self.cfg.clip.fps
            s.max_lag_s = max(s.max_lag_s, lag)
            worst = max(worst, lag)
        return worst

    def run(self, seconds: float) -> dict:
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
        profile = profiler.finish() if profiler is not None else None
        result = {**self.summary(ours, workers, node_pid, first_memory), "profile": profile,
                  "publishers_cpu_pct": round(load.percent(), 2),
                  "publishers_cpu_pct_per_stream": round(load.percent() / self.n, 3),
                  "machine_busy_pct": round(psutil.cpu_percent(None), 1)}
        if ff:
            result["ffmpeg_cpu"] = {"total_pct": round(ff.percent(), 2), "per_stream_pct": round(ff.percent() / self.n, 3),
                                    "system_share": round(ff.system_share() or 0.0, 3)}
        return result

    def summary(self, ours: CpuWindow, workers: set[int], node_pid: int,
                first_memory: dict[int, tuple[float, float]]) -> dict:
        """CPU over the whole window; memory of the last sample, and its growth since the first."""
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
        return {
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
        }

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
