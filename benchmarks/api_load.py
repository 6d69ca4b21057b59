"""StartRecord/StopRecord latency under a steady request rate (--api-load).

Open loop: request k is due at t0 + k / rate whatever the previous answers took,
so a slow node shows up as latency, not as a lower rate. Requests alternate
StartRecord (a task on a room with no streams) and StopRecord of that task; each
is a signed call on a new HTTP connection, as a stateless client makes it.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.config import Storage, admission_args
from benchmarks.percentiles import distribution
from benchmarks.procs import CpuWindow, Pinning
from testkit.node import NodeProcess
from testkit.ports import free_port, free_udp_range


def run_api_load(seconds: float, rate: float, workdir: Path, pinning: Pinning, storage: Storage) -> dict:
    say = lambda text: print(f"[api-load] {text}", flush=True)  # noqa: E731
    workdir.mkdir(parents=True, exist_ok=True)
    node = NodeProcess(workdir / "data", free_port(), free_udp_range(40), workdir / "node.log",
                       extra_args=(*storage.node_args(), *admission_args("off", 1)))
    with pinning.recorder_context():
        node.start()
    latencies: dict[str, list[float]] = {"StartRecord": [], "StopRecord": []}
    lateness: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    pairs = int(seconds * rate / 2)
    say(f"{pairs} StartRecord/StopRecord pairs, {rate:.0f} requests/s for {seconds:.0f} s")

    def call(action: str, body: dict, due: float) -> dict | None:
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        began = time.monotonic()
        try:
            answer = node.call(action, body)
        except Exception as error:  # noqa: BLE001 - every failure is a result here
            with lock:
                errors.append(f"{action}: {error!r}"[:200])
            return None
        took = time.monotonic() - began
        with lock:
            latencies[action].append(took)
            lateness.append(began - due)
            if answer.get("Code") != 0:
                errors.append(f"{action}: {answer.get('Code')} {answer.get('Message')}"[:200])
        return answer

    def pair(k: int, t0: float) -> None:
        started = call("StartRecord", storage.body(f"api-load-{k}", "api/"), t0 + 2 * k / rate)
        task_id = (started or {}).get("Data", {}).get("TaskId")
        if task_id:
            call("StopRecord", {"TaskId": task_id}, t0 + (2 * k + 1) / rate)

    cpu = CpuWindow([node.process.pid])
    try:
        with ThreadPoolExecutor(64) as pool:
            t0 = time.monotonic() + 0.5
            cpu.start()
            futures = []
            next_report = t0 + 2
            for k in range(pairs):
                due = t0 + 2 * k / rate
                while time.monotonic() < due - 0.05:  # submit just in time: the pool never queues far ahead
                    time.sleep(0.01)
                futures.append(pool.submit(pair, k, t0))
                if time.monotonic() >= next_report:
                    next_report += 2
                    cpu.sample()
                    with lock:
                        done = sum(len(v) for v in latencies.values())
                        recent = sorted(latencies["StartRecord"][-50:] + latencies["StopRecord"][-50:])
                    say(f"{time.monotonic() - t0:5.1f} s  {done} answered  node cpu {cpu.percent():.1f}%  "
                        f"recent p95 {1000 * recent[int(0.95 * (len(recent) - 1))]:.1f} ms" if recent else "")
            for future in futures:
                future.result()
            cpu.sample()
            elapsed = time.monotonic() - t0
    finally:
        node.stop()
    answered = sum(len(v) for v in latencies.values())
    result = {
        "rate_requested_per_s": rate, "seconds": seconds, "requests": answered, "errors": len(errors),
        "error_samples": errors[:5], "rate_achieved_per_s": round(answered / elapsed, 2),
        "node_cpu_pct": round(cpu.percent(), 2),
        "latency_s": {action: distribution(values) for action, values in latencies.items()},
        "all_latency_s": distribution(latencies["StartRecord"] + latencies["StopRecord"]),
        "client_lateness_s": distribution(lateness),
    }
    for action, d in result["latency_s"].items():
        say(f"{action}: p50 {1000 * d['p50']:.1f} ms  p95 {1000 * d['p95']:.1f} ms  p99 {1000 * d['p99']:.1f} ms  "
            f"max {1000 * d['max']:.1f} ms" if d.get("n") else f"{action}: no answers")
    return result
