"""API latency under a steady request rate: one node (--api-load), or a fleet
whose calls are spread over its nodes (benchmarks.fleet).

Open loop: request j is due at t0 + j / rate whatever the previous answers took,
so a slow node shows up as latency, not as a lower rate. The requests come in
rounds of steps (one node: StartRecord of a task on a room with no streams, then
StopRecord of that task); a step's body may use what the round's StartRecord
answered (its TaskId). Each is a signed call on a new HTTP connection, as a
stateless client makes it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.config import Storage, admission_args
from benchmarks.percentiles import distribution
from benchmarks.procs import CpuWindow, Pinning
from testkit.node import NodeProcess
from testkit.ports import free_port, free_udp_range

REPORT_EVERY_S = 2.0


@dataclass(frozen=True)
class Step:
    """One call of a round: `body(task_id)` is its request (None: skip it, the
    round's StartRecord having failed)."""
    action: str
    node: NodeProcess
    body: Callable[[str | None], dict | None]


@dataclass
class Answers:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    lateness: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    def summary(self, rate: float, seconds: float) -> dict:
        answered = self.count()
        every = [v for values in self.latencies.values() for v in values]
        return {"rate_requested_per_s": rate, "seconds": seconds, "requests": answered, "errors": len(self.errors),
                "error_samples": self.errors[:5], "rate_achieved_per_s": round(answered / self.elapsed, 2),
                "latency_s": {action: distribution(values) for action, values in self.latencies.items()},
                "all_latency_s": distribution(every), "client_lateness_s": distribution(self.lateness)}


def open_loop(rounds: int, rate: float, steps_of: Callable[[int], list[Step]], say: Callable[[str], None],
              progress: Callable[[], str] = lambda: "") -> Answers:
    """Run `rounds` rounds of `steps_of(k)`, one request every 1 / rate s."""
    answers = Answers()
    per_round = len(steps_of(0))
    for step in steps_of(0):
        answers.latencies.setdefault(step.action, [])

    def call(step: Step, body: dict, due: float) -> dict | None:
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        began = time.monotonic()
        try:
            answer = step.node.call(step.action, body)
        except Exception as error:  # noqa: BLE001 - every failure is a result here
            with answers.lock:
                answers.errors.append(f"{step.action}: {error!r}"[:200])
            return None
        took = time.monotonic() - began
        with answers.lock:
            answers.latencies[step.action].append(took)
            answers.lateness.append(began - due)
            if answer.get("Code") != 0:
                answers.errors.append(f"{step.action}: {answer.get('Code')} {answer.get('Message')}"[:200])
        return answer

    def round_(k: int, t0: float) -> None:
        task_id = None
        for i, step in enumerate(steps_of(k)):
            body = step.body(task_id)
            if body is None:
                return
            answer = call(step, body, t0 + (per_round * k + i) / rate)
            if step.action == "StartRecord":
                task_id = (answer or {}).get("Data", {}).get("TaskId")

    with ThreadPoolExecutor(64) as pool:
        t0 = time.monotonic() + 0.5
        futures = []
        next_report = t0 + REPORT_EVERY_S
        for k in range(rounds):
            due = t0 + per_round * k / rate
            while time.monotonic() < due - 0.05:  # submit just in time: the pool never queues far ahead
                time.sleep(0.01)
            futures.append(pool.submit(round_, k, t0))
            if time.monotonic() >= next_report:
                next_report += REPORT_EVERY_S
                with answers.lock:
                    done = answers.count()
                    recent = sorted(v for values in answers.latencies.values() for v in values[-50:])
                p95 = f"recent p95 {1000 * recent[int(0.95 * (len(recent) - 1))]:.1f} ms" if recent else ""
                say(f"{time.monotonic() - t0:5.1f} s  {done} answered  {progress()}  {p95}")
        for future in futures:
            future.result()
        answers.elapsed = time.monotonic() - t0
    return answers


def say_latencies(say: Callable[[str], None], latency_s: dict) -> None:
    for action, d in latency_s.items():
        say(f"{action}: p50 {1000 * d['p50']:.1f} ms  p95 {1000 * d['p95']:.1f} ms  p99 {1000 * d['p99']:.1f} ms  "
            f"max {1000 * d['max']:.1f} ms" if d.get("n") else f"{action}: no answers")


def run_api_load(seconds: float, rate: float, workdir: Path, pinning: Pinning, storage: Storage) -> dict:
    say = lambda text: print(f"[api-load] {text}", flush=True)  # noqa: E731
    workdir.mkdir(parents=True, exist_ok=True)
    node = NodeProcess(workdir / "data", free_port(), free_udp_range(40), workdir / "node.log",
                       extra_args=(*storage.node_args(), *admission_args("off", 1)))
    with pinning.recorder_context():
        node.start()
    pairs = int(seconds * rate / 2)
    say(f"{pairs} StartRecord/StopRecord pairs, {rate:.0f} requests/s for {seconds:.0f} s")

    def steps_of(k: int) -> list[Step]:
        return [Step("StartRecord", node, lambda _: storage.body(f"api-load-{k}", "api/")),
                Step("StopRecord", node, lambda task_id: {"TaskId": task_id} if task_id else None)]

    cpu = CpuWindow([node.process.pid])
    cpu.start()

    def progress() -> str:
        cpu.sample()
        return f"node cpu {cpu.percent():.1f}%"

    try:
        answers = open_loop(pairs, rate, steps_of, say, progress)
        cpu.sample()
    finally:
        node.stop()
    result = answers.summary(rate, seconds)
    result["node_cpu_pct"] = round(cpu.percent(), 2)
    say_latencies(say, result["latency_s"])
    return result
