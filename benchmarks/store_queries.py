"""The store's hot calls on SQLite and on PostgreSQL, as the node makes them
(through AsyncStore: one at a time, off the event loop).

    .venv/bin/python -m benchmarks.store_queries --seconds 3

PostgreSQL is a private cluster on 127.0.0.1 (testkit.postgres), durable (fsync
and synchronous commit on, as in production) unless --pg-fast. Prints, per
call, calls per second and p50 / p99 latency in ms.

    .venv/bin/python -m benchmarks.store_queries --seconds 10 --ceiling 1,4,16,48

--ceiling: PostgreSQL only, the writes a fleet makes most (upsert_file: each
recording file's progress, every second; claim_nonce: each signed API call) from
C concurrent callers, each with its own Store (a node's pool), as C nodes would
make them: calls/s, latency, and the server's CPU per call (its process tree's
CPU time, robust to a shared machine where calls/s is not). Commits of
concurrent callers share a WAL flush (group commit): the ceiling is what a
fleet's store serves, not 1 / latency.

    .venv/bin/python -m benchmarks.store_queries --pg-fast --seconds 2 --describe-growth 1000,10000,50000

--describe-growth: DescribeTasks of one room (page_tasks) as the tasks table grows.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from benchmarks.percentiles import percentile
from benchmarks.procs import CpuWindow
from engine import models
from engine.status import FileStatus, TaskStatus
from engine.store import AsyncStore, FileRecord, Store, TaskRecord
from testkit.postgres import PostgresCluster

REQUEST = models.parse_start_record({
    "RoomId": "bench-room", "RecordInputParams": {"RecordMode": 1, "StreamType": 3},
    "StorageParams": {"Vendor": 1, "Region": "us-east-1", "Bucket": "b", "AccessKeyId": "AK",
                      "AccessKeySecret": "SECRET"},
})
TASKS = 500  # in the store before measuring, so lookups are not on an empty table
FILES_PER_TASK = 4


def task(n: int) -> TaskRecord:
    return TaskRecord(f"{n:016d}", f"client-{n}", f"room-{n % 50}", TaskStatus.RECORDING, REQUEST,
                      1_767_000_000_000 + n, begin_ms=1_767_000_000_000 + n)


def file(task_n: int, k: int, size: int) -> FileRecord:
    return FileRecord(f"rec/{task_n:016d}_{k}.mp4", f"{task_n:016d}", f"s{k}", "u", "u", "mp4", "https://b/x",
                      3, 1_767_000_000_000, FileStatus.RECORDING, size=size, duration_ms=size // 100)


async def fill(store: AsyncStore) -> None:
    for n in range(TASKS):
        await store.insert_task(task(n))
        for k in range(FILES_PER_TASK):
            await store.upsert_file(file(n, k, 0))


def calls(store: AsyncStore) -> dict[str, Callable[[int], Awaitable]]:
    """What the node does, per call: i numbers the call."""
    nonce = itertools.count()
    return {
        "claim_nonce (each signed API call)": lambda i: store.claim_nonce(f"n{next(nonce)}", 1.7e9 + i, 1.7e9),
        "upsert_file (each file progress event)": lambda i: store.upsert_file(file(i % TASKS, i % FILES_PER_TASK,
                                                                                   i)),
        "get_task + files_of_task (DescribeRecordStatus)": lambda i: asyncio.gather(
            store.get_task(f"{i % TASKS:016d}"), store.files_of_task(f"{i % TASKS:016d}")),
        "page_tasks (DescribeTasks, a room)": lambda i: store.page_tasks(
            (TaskStatus.RECORDING,), f"room-{i % 50}", 0, 2_000_000_000_000, 0, 50),
        "add_callback (each event)": lambda i: store.add_callback(f"{i % TASKS:016d}", 1, "http://x", {}, i),
        "pending_callbacks (the sender's poll)": lambda i: store.pending_callbacks(),
        "insert_task (StartRecord)": lambda i: store.insert_task(task(TASKS + i)),
    }


async def measure(store: AsyncStore, seconds: float,
                  analyze: Callable[[], None]) -> dict[str, tuple[float, float, float]]:
    await fill(store)
    results = {}
    for name, call in calls(store).items():
        await asyncio.to_thread(analyze)  # the planner's statistics of a store in use (autovacuum's, on PostgreSQL)
        latencies = []
        started = time.perf_counter()
        i = 0
        while time.perf_counter() - started < seconds:
            t0 = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - t0)
            i += 1
        elapsed = time.perf_counter() - started
        results[name] = (i / elapsed, percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000)
    return results


async def run_one(location: Path | str, seconds: float) -> dict[str, tuple[float, float, float]]:
    opened = await asyncio.to_thread(Store, location, "bench-node")
    store = AsyncStore(opened)
    try:
        return await measure(store, seconds, lambda: opened._db.execute("ANALYZE"))
    finally:
        await asyncio.to_thread(store.close)


CEILING_CALLS = {
    "upsert_file": lambda store, i: store.upsert_file(file(i % TASKS, i % FILES_PER_TASK, i)),
    "claim_nonce": lambda store, i: store.claim_nonce(f"c{threading.get_ident()}-{i}", 1.7e9 + i, 1.7e9),
}


def ceiling(cluster: PostgresCluster, concurrency: list[int], seconds: float) -> list[dict]:
    """Each call at each C: C threads, each with its own Store, calling in a loop."""
    url = cluster.create_database()
    filler = AsyncStore(Store(url, "bench-node"))
    asyncio.run(fill(filler))
    filler.close()
    rows = []
    for name, call in CEILING_CALLS.items():
        for c in concurrency:
            stores = [Store(url, f"bench-node-{k}") for k in range(c)]
            latencies: list[list[float]] = [[] for _ in range(c)]
            stop_at = time.perf_counter() + seconds

            def loop(k: int) -> None:
                i = k * 10_000_000
                while (t0 := time.perf_counter()) < stop_at:
                    call(stores[k], i)
                    latencies[k].append(time.perf_counter() - t0)
                    i += 1

            cpu = CpuWindow([cluster.pid])
            threads = [threading.Thread(target=loop, args=(k,)) for k in range(c)]
            cpu.start()
            began = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            cpu.sample()
            elapsed = time.perf_counter() - began
            every = [v for values in latencies for v in values]
            for store in stores:
                store.close()
            rows.append({"call": name, "concurrency": c, "calls_per_s": len(every) / elapsed,
                         "p50_ms": percentile(every, 50) * 1000, "p99_ms": percentile(every, 99) * 1000,
                         "server_cpu_pct": cpu.percent(), "server_cpu_ms_per_call": cpu.used() * 1000 / len(every)})
            print(f"{name} x {c}: {len(every) / elapsed:,.0f} calls/s, server CPU {cpu.percent():.0f} %", flush=True)
    return rows


def describe_growth(cluster: PostgresCluster, sizes: list[int], seconds: float) -> list[dict]:
    """page_tasks of one room (DescribeTasks with a RoomId) as the tasks table grows:
    its time and the plan's scan, for every task in the 3-day window."""
    url = cluster.create_database()
    store = Store(url, "bench-node")
    rows, have = [], 0
    try:
        for size in sizes:
            for n in range(have, size):
                store.insert_task(task(n))
            have = size
            store._db.execute("ANALYZE")
            latencies = []
            started = time.perf_counter()
            while time.perf_counter() - started < seconds:
                t0 = time.perf_counter()
                store.page_tasks((TaskStatus.RECORDING,), f"room-{len(latencies) % 50}", 0, 2_000_000_000_000, 0, 50)
                latencies.append(time.perf_counter() - t0)
            plan = cluster.admin_in(url, "EXPLAIN SELECT COUNT(*) FROM tasks WHERE status IN (2) AND created_ms "
                                         "BETWEEN 0 AND 2000000000000 AND room_id = 'room-3'")
            scan = next((m.group(0) for line in plan if (m := re.search(r"[A-Z][\w ]*Scan[\w ]* on \w+", line[0]))), "?")
            rows.append({"tasks": size, "p50_ms": percentile(latencies, 50) * 1000,
                         "p99_ms": percentile(latencies, 99) * 1000, "scan": scan})
            print(f"{size:,} tasks: page_tasks p50 {rows[-1]['p50_ms']:.2f} ms, {scan}", flush=True)
    finally:
        store.close()
    print("| tasks in the window | page_tasks of a room p50 ms | p99 ms | plan |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['tasks']:,} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['scan']} |")
    return rows


def print_ceiling(rows: list[dict]) -> None:
    print("| call | concurrent callers | calls/s | p50 ms | p99 ms | PostgreSQL CPU % | its CPU ms per call |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['call']} | {r['concurrency']} | {r['calls_per_s']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
              f"{r['server_cpu_pct']:.0f} | {r['server_cpu_ms_per_call']:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="per call")
    parser.add_argument("--pg-fast", action="store_true", help="PostgreSQL without fsync (as the tests run it)")
    parser.add_argument("--ceiling", default="", metavar="C,C,...",
                        help="instead: concurrent writers on PostgreSQL only (see above)")
    parser.add_argument("--describe-growth", default="", metavar="N,N,...",
                        help="instead: DescribeTasks of a room as the tasks table grows to N tasks (PostgreSQL)")
    args = parser.parse_args()
    if args.describe_growth:
        cluster = PostgresCluster(durable=not args.pg_fast).start()
        try:
            describe_growth(cluster, [int(n) for n in args.describe_growth.split(",")], args.seconds)
        finally:
            cluster.stop()
        return
    if args.ceiling:
        cluster = PostgresCluster(durable=not args.pg_fast).start()
        try:
            print_ceiling(ceiling(cluster, [int(c) for c in args.ceiling.split(",")], args.seconds))
        finally:
            cluster.stop()
        return
    columns: dict[str, dict[str, tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory() as directory:
        columns["SQLite"] = asyncio.run(run_one(Path(directory) / "bench.sqlite3", args.seconds))
    cluster = PostgresCluster(durable=not args.pg_fast).start()
    try:
        columns["PostgreSQL"] = asyncio.run(run_one(cluster.create_database(), args.seconds))
    finally:
        cluster.stop()
    print(f"| call | {' | '.join(f'{kind} calls/s, p50, p99 ms' for kind in columns)} |")
    print(f"|---|{'---|' * len(columns)}")
    for name in columns["SQLite"]:
        cells = [f"{rate:,.0f}, {p50:.2f}, {p99:.2f}" for rate, p50, p99 in (columns[k][name] for k in columns)]
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
