"""What a fleet asks of its PostgreSQL, from the server's counters: statements
per second with the fleet idle, with M tasks waiting on rooms without streams,
and with N plain-RTP streams each recorded by one task; per task and per
recording stream by difference with the idle fleet.

Streams and tasks are spread round robin over the nodes; each stream's task is
started on the node that receives the stream, before its media flows.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.config import Storage
from benchmarks.fleet_cluster import FleetUnderTest, Usage
from benchmarks.publishers import RtpPublisher
from testkit.node import NodeProcess
from testkit.rtp import ClipSpec, PublisherSpec

CLIP = ClipSpec(width=320, height=240, fps=30, keyint=60)  # small (the store sees files, not pixels); a key frame every 2 s
LOOP_CLIP_S = 20.0  # publishers repeat a clip this long (10 GOPs)
SETTLE_S = 2.0  # after the last task started, before measuring (its first inserts are not the steady state)
LIVE_TIMEOUT_S = 30.0
PUBLISHER_LOAD_S = 6.0  # each publisher's start, on the one load CPU shared with other test runs: more per stream
STORAGE = Storage("disk")
MAX_IDLE_TIME_S = 3600  # a task on a room without streams would end after 30 s (the default) mid-window


@dataclass(frozen=True)
class StoreLoadConfig:
    seconds: float = 30.0  # per window
    tasks: int = 30  # M
    streams: int = 9  # N
    sample_interval: float = 2.0


def window(fleet: FleetUnderTest, seconds: float, label: str, interval: float, say: Callable[[str], None],
           timeline: list[dict], origin: float) -> dict:
    """The store's use over `seconds`, with a progress line and a timeline point every `interval`."""
    counters, cpu = fleet.counters, fleet.server_cpu
    first = previous = counters.snapshot()
    cpu.start()
    while True:
        time.sleep(min(interval, max(0.0, first.at + seconds - time.monotonic())))
        now = counters.snapshot()
        cpu.sample()
        step = Usage.between(previous, now)
        timeline.append({"t": round(now.at - origin, 2), "phase": label,
                         "statements_per_s": round(step.statements_per_s, 2)})
        so_far = Usage.between(first, now)
        say(f"{label}: {now.at - first.at:5.1f}/{seconds:.0f} s  {so_far.statements_per_s:7.1f} statements/s  "
            f"{so_far.database_per_s['xact_commit']:6.1f} commits/s  PostgreSQL cpu {cpu.percent():5.1f}%")
        previous = now
        if now.at - first.at >= seconds - 0.05:
            break
    usage = Usage.between(first, now).as_dict()
    usage["server_cpu_pct"] = round(cpu.percent(), 2)
    return usage


def idle_usage(fleet: FleetUnderTest, seconds: float, interval: float, say: Callable[[str], None]) -> dict:
    """The idle fleet's use of the store (what a load is measured against)."""
    return window(fleet, seconds, "idle", interval, say, [], time.monotonic())


def start_task(node: NodeProcess, room: str) -> str:
    body = STORAGE.body(room, "fleet/")
    body["RecordInputParams"]["MaxIdleTime"] = MAX_IDLE_TIME_S
    return node.ok("StartRecord", body)["TaskId"]


def stop_tasks(fleet: FleetUnderTest, tasks: list[tuple[NodeProcess, str]]) -> None:
    """Each task stopped through the node that started it, or a live one if that one is dead."""
    live = fleet.live_nodes()
    for node, task_id in tasks:
        answer = (node if node in live else live[0]).call("StopRecord", {"TaskId": task_id})
        if answer.get("Code") != 0:
            raise RuntimeError(f"StopRecord {task_id}: {answer}")


def wait_store(fleet: FleetUnderTest, sql: str, params: tuple, wanted: int, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while (have := fleet.counters.query(sql, params)[0][0]) < wanted:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {have} of {wanted} {what} after {timeout_s:.0f} s")
        time.sleep(0.2)


class Streams:
    """N plain-RTP publishers, stream k to node k % K (of `nodes`, default the
    fleet's), each recorded by a task on that node."""

    def __init__(self, fleet: FleetUnderTest, n: int, duration_s: float, nodes: list[NodeProcess] | None = None,
                 prefix: str = "fleet-stream"):
        self.fleet, self.n, self.duration_s = fleet, n, duration_s
        self.nodes = nodes or fleet.nodes
        self.prefix = prefix
        self.kind = RtpPublisher()
        self.tasks: list[tuple[NodeProcess, str]] = []
        self.locations: list[tuple[NodeProcess, str]] = []
        self.processes: list[subprocess.Popen] = []

    @staticmethod
    def live_timeout_s(n: int) -> float:
        return LIVE_TIMEOUT_S + PUBLISHER_LOAD_S * n

    def spec(self, k: int) -> PublisherSpec:
        return PublisherSpec(duration_s=self.duration_s, clip=CLIP, loop_clip_s=LOOP_CLIP_S, keep_sent_bytes=False,
                             manifest_path=str(self.fleet.workdir / f"{self.prefix}-{k}.pkl"), seed=k)

    def start(self, say: Callable[[str], None]) -> None:
        self.kind.prepare(self.spec(0))
        for k in range(self.n):
            node = self.nodes[k % len(self.nodes)]
            room = f"{self.prefix}-{k}"
            self.tasks.append((node, start_task(node, room)))
            announced = self.kind.announce(node, room, f"s{k}", self.spec(k))
            self.locations.append((node, announced.location))
            self.processes.append(self.kind.start(announced.spec, announced,
                                                  preexec_fn=self.fleet.pinning.load_preexec()))
        wait_store(self.fleet, "SELECT count(DISTINCT task_id) FROM files WHERE task_id = ANY(%s)",
                   ([task_id for _, task_id in self.tasks],), self.n, "recording files",
                   self.live_timeout_s(self.n))
        say(f"{self.n} streams recording (a file each in the store)")

    def stop(self) -> None:
        """Every task stopped (through any live node), every publisher ended and unpublished."""
        stop_tasks(self.fleet, self.tasks)
        for process in self.processes:
            process.kill()
            process.wait()
        for node, location in self.locations:
            if node.process is not None and node.process.poll() is None:
                node.unpublish(location)


def per_unit(load: dict, idle: dict, units: int) -> dict:
    """(load - idle) / units, for the totals and each statement kind."""
    kinds = set(load["by_kind_per_s"]) | set(idle["by_kind_per_s"])
    by_kind = {k: (load["by_kind_per_s"].get(k, 0.0) - idle["by_kind_per_s"].get(k, 0.0)) / units for k in kinds}
    return {"statements_per_s": round((load["statements_per_s"] - idle["statements_per_s"]) / units, 4),
            "framing_per_s": round((load["framing_per_s"] - idle["framing_per_s"]) / units, 4),
            "commits_per_s": round((load["database_per_s"]["xact_commit"] - idle["database_per_s"]["xact_commit"])
                                   / units, 4),
            "exec_ms_per_s": round((load["exec_ms_per_s"] - idle["exec_ms_per_s"]) / units, 4),
            "server_cpu_pct": round((load["server_cpu_pct"] - idle["server_cpu_pct"]) / units, 4),
            "wal_bytes_per_s": round((load["database_per_s"].get("wal_bytes", 0) - idle["database_per_s"].get(
                "wal_bytes", 0)) / units, 1),
            "rows_updated_per_s": round((load["database_per_s"]["tup_updated"] - idle["database_per_s"]["tup_updated"])
                                        / units, 4),
            "by_kind_per_s": {k: round(v, 4) for k, v in sorted(by_kind.items(), key=lambda kv: -abs(kv[1]))
                              if abs(v) >= 0.0005}}


def run_store_load(fleet: FleetUnderTest, config: StoreLoadConfig, say: Callable[[str], None]) -> dict:
    timeline: list[dict] = []
    origin = time.monotonic()
    measure = lambda label: window(fleet, config.seconds, label, config.sample_interval, say,  # noqa: E731
                                   timeline, origin)
    phases = {"idle": measure("idle")}
    nodes = [fleet.nodes[k % len(fleet.nodes)] for k in range(config.tasks)]
    tasks = [(node, start_task(node, f"fleet-idle-{k}")) for k, node in enumerate(nodes)]
    say(f"{config.tasks} tasks waiting on rooms without streams")
    time.sleep(SETTLE_S)
    phases["tasks"] = measure(f"{config.tasks} idle tasks")
    stop_tasks(fleet, tasks)
    streams = Streams(fleet, config.streams, config.seconds + SETTLE_S + Streams.live_timeout_s(config.streams) + 10)
    try:
        streams.start(say)
        time.sleep(SETTLE_S)
        phases["streams"] = measure(f"{config.streams} recording streams")
    finally:
        streams.stop()
    return {
        "config": {"seconds": config.seconds, "tasks": config.tasks, "streams": config.streams,
                   "nodes": len(fleet.nodes), "clip": f"{CLIP.width}x{CLIP.height}@{CLIP.fps} keyint {CLIP.keyint}",
                   "storage": "node disk (Vendor 0)"},
        "phases": phases,
        "per_node_idle": per_unit(phases["idle"], {**phases["idle"], "statements_per_s": 0, "framing_per_s": 0,
                                                   "exec_ms_per_s": 0, "server_cpu_pct": 0, "by_kind_per_s": {},
                                                   "database_per_s": {"xact_commit": 0, "tup_updated": 0}},
                                   len(fleet.nodes)),
        "per_task": per_unit(phases["tasks"], phases["idle"], config.tasks),
        "per_stream": per_unit(phases["streams"], phases["idle"], config.streams),
        "timeline": timeline,
    }
