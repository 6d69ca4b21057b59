"""python -m benchmarks.fleet: K nodes sharing one PostgreSQL (durable, private,
testkit.postgres) measured from the server's counters.

    .venv/bin/python -m benchmarks.fleet --phases store,api,death

Phases, on one fleet in this order:
- store: statements/s the store serves with the fleet idle, with --tasks tasks on
  rooms without streams, and with --streams plain-RTP streams recording; per node,
  per task, per stream (benchmarks.fleet_store);
- api: StartRecord on node k % K, DescribeRecordStatus and DescribeTasks of that
  task on the next two nodes, StopRecord on the first, open loop at --api-rate
  requests/s: p50/p95/p99 per action, and the store's statements per call;
- death: SIGKILL of node-b while it records, --deaths times: the time until its lease
  runs out as the store shows it to the survivors (benchmarks.fleet_death).
Each phase writes `fleet-<phase>.json` under --out; `fleet.md` and
`fleet-store.png` are regenerated from every fleet-*.json there.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from benchmarks import fleet_report, report
from benchmarks.api_load import Step, open_loop, say_latencies
from benchmarks.fleet_cluster import FleetUnderTest, Usage
from benchmarks.fleet_death import run_deaths
from benchmarks.fleet_report import PHASES
from benchmarks.fleet_store import STORAGE, StoreLoadConfig, idle_usage, run_store_load
from benchmarks.procs import Pinning

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phases", default=",".join(PHASES), help="comma-separated, of " + ", ".join(PHASES))
    parser.add_argument("--nodes", type=int, default=3, help="K nodes (default 3; death needs 2+)")
    parser.add_argument("--lease", type=float, default=10.0, help="--node-lease of every node (default 10 s)")
    parser.add_argument("--seconds", type=float, default=30.0, help="each store window (default 30)")
    parser.add_argument("--tasks", type=int, default=30, help="M idle tasks (default 30)")
    parser.add_argument("--streams", type=int, default=9, help="N recording streams (default 9)")
    parser.add_argument("--api-seconds", type=float, default=20.0, help="API load duration (default 20)")
    parser.add_argument("--api-rate", type=float, default=40.0, help="API requests/s over the fleet (default 40)")
    parser.add_argument("--deaths", type=int, default=3, help="SIGKILL trials (default 3)")
    parser.add_argument("--sample-interval", type=float, default=2.0, help="seconds between progress lines")
    parser.add_argument("--pin", choices=("auto", "none"), default="auto",
                        help="auto: nodes + PostgreSQL on all CPUs but the last, publishers + harness on it")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="fleet", help="results file prefix (default fleet)")
    args = parser.parse_args(argv)
    args.phase_list = [p.strip() for p in args.phases.split(",") if p.strip()]
    if unknown := set(args.phase_list) - set(PHASES):
        parser.error(f"--phases: unknown {', '.join(sorted(unknown))}")
    if args.nodes < (2 if "death" in args.phase_list else 1):
        parser.error("--nodes: death needs at least 2 nodes")
    return args


def run_api(fleet: FleetUnderTest, seconds: float, rate: float, idle: dict, say) -> dict:
    nodes = fleet.nodes
    k_nodes = len(nodes)

    def steps_of(k: int) -> list[Step]:
        room = f"fleet-api-{k}"
        owner, other, third = nodes[k % k_nodes], nodes[(k + 1) % k_nodes], nodes[(k + 2) % k_nodes]
        by_task = lambda task_id: {"TaskId": task_id} if task_id else None  # noqa: E731
        return [Step("StartRecord", owner, lambda _: STORAGE.body(room, "api/")),
                Step("DescribeRecordStatus", other, by_task),
                Step("DescribeTasks", third, lambda task_id: {"RoomId": room, "Status": 2} if task_id else None),
                # to the node that started it: StopRecord from any node is work in progress in engine/
                Step("StopRecord", owner, by_task)]

    rounds = int(seconds * rate / 4)
    say(f"{rounds} rounds of 4 calls over {k_nodes} nodes, {rate:.0f} requests/s for {seconds:.0f} s")
    before = fleet.counters.snapshot()
    fleet.server_cpu.start()

    def progress() -> str:
        fleet.server_cpu.sample()
        return f"PostgreSQL cpu {fleet.server_cpu.percent():.1f}%"

    answers = open_loop(rounds, rate, steps_of, say, progress)
    fleet.server_cpu.sample()
    usage = Usage.between(before, fleet.counters.snapshot())
    result = answers.summary(rate, seconds)
    say_latencies(say, result["latency_s"])
    calls_per_s = answers.count() / usage.seconds
    idle_per_s = idle["statements_per_s"]
    result.update({"nodes": k_nodes, "server_cpu_pct": round(fleet.server_cpu.percent(), 2),
                   "store": usage.as_dict(),
                   "statements_per_call": round((usage.statements_per_s - idle_per_s) / calls_per_s, 3),
                   "commits_per_call": round(usage.database_per_s["xact_commit"] / calls_per_s, 3)})
    say(f"{result['statements_per_call']} statements per API call (idle fleet's subtracted)")
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pinning = Pinning.choose(args.pin)
    pinning.as_load()
    say = lambda text: print(f"[fleet] {text}", flush=True)  # noqa: E731
    command = "python -m benchmarks.fleet " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    common = {"kind": "fleet", "command": command, "machine": report.machine(), "pinning": pinning.describe(),
              "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "nodes": args.nodes,
              "lease_s": args.lease, "load_note": "2-core VM shared with other helpers' test runs"}
    say(pinning.describe())
    workdir = Path(tempfile.mkdtemp(prefix="recnode-fleet-"))
    fleet = FleetUnderTest(workdir, args.nodes, args.lease, pinning, max_streams=args.streams + 8)
    written = []
    try:
        fleet.start(say)
        idle = None
        for phase in args.phase_list:
            if phase == "store":
                result = run_store_load(fleet, StoreLoadConfig(args.seconds, args.tasks, args.streams,
                                                               args.sample_interval), say)
                idle = result["phases"]["idle"]
            elif phase == "api":
                if idle is None:
                    idle = idle_usage(fleet, min(args.seconds, 10.0), args.sample_interval, say)
                result = run_api(fleet, args.api_seconds, args.api_rate, idle, say)
            else:
                result = run_deaths(fleet, args.deaths, say)
            written.append(report.write_run(args.out, f"{args.name}-{phase}", {**common, "phase": phase, **result}))
    except BaseException:
        print(f"fleet benchmark failed: logs kept in {workdir}", file=sys.stderr, flush=True)
        fleet.stop()
        raise
    fleet.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    summary = fleet_report.write(args.out, args.name)
    say(f"results: {', '.join(str(p) for p in written)}  summary: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
