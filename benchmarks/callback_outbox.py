"""The callback sender's polls against a long outbox, on SQLite and PostgreSQL.

    .venv/bin/python -m benchmarks.callback_outbox --history 100000 --tasks 1000 --undone 23

Two live nodes share the outbox: `--history` tasks whose events were all delivered
(5 each: the outbox keeps them), and `--tasks` tasks with `--done` events delivered
and `--undone` waiting (a receiver down a while), each node sending half of them.
Measures, per call, p50 / p99 latency in ms: the sender's poll (pending_callbacks,
every 0.2 s), its look for streams of gone nodes (take_over_callbacks, every
lease/4, finding none), and add_callback (each event); prints PostgreSQL's plans.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.percentiles import percentile
from engine.store import Store
from testkit.postgres import PostgresCluster

NODES = ("bench-node", "other-node")
LEASE_MS = 3_600_000
HISTORY_EVENTS = 5


def add_events(store: Store, prefix: str, tasks: int, done: int, undone: int) -> None:
    """Events of `tasks` tasks, written in one statement (portable SQL), and their streams' senders."""
    per_task = done + undone
    store._db.execute(
        "INSERT INTO callbacks (task_id, sequence, event_type, url, body_json, created_ms, attempts, done_ms, "
        "delivered, node_id) WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?) "
        "SELECT ? || (i / ?), i % ?, 1, 'http://x', '{}', 0, CASE WHEN i % ? < ? THEN 1 ELSE 0 END, "
        "CASE WHEN i % ? < ? THEN 1 END, CASE WHEN i % ? < ? THEN 1 ELSE 0 END, "
        "CASE WHEN (i / ?) % 2 = 0 THEN ? ELSE ? END FROM n",
        (tasks * per_task, prefix, per_task, per_task, per_task, done, per_task, done, per_task, done, per_task,
         *NODES))
    store._db.execute(
        "INSERT INTO callback_senders (task_id, node_id, next_to_send, backlog) "
        "SELECT task_id, MAX(node_id), ?, ? FROM callbacks WHERE task_id LIKE ? GROUP BY task_id",
        (done, undone, prefix + "%"))


def fill(stores: list[Store], args: argparse.Namespace) -> None:
    now_ms = int(time.time() * 1000)
    for store in stores:
        store.renew_node("http://x", "ready", 1, 1, now_ms, LEASE_MS)
    add_events(stores[0], "history-", args.history, HISTORY_EVENTS, 0)
    add_events(stores[0], "backlog-", args.tasks, args.done, args.undone)
    db = stores[0]._db
    db.execute("VACUUM ANALYZE" if db.kind == "postgresql" else "ANALYZE")  # as autovacuum leaves a store in use


def explained(store: Store, call: Callable[[], object]) -> list[str]:
    """PostgreSQL's plan of each statement `call` makes (EXPLAIN ANALYZE runs it)."""
    run, plan = store._db.execute, []

    def explain(sql: str, params: tuple = ()) -> list:
        plan.extend(row[0] for row in run("EXPLAIN ANALYZE " + sql, params))
        return []

    store._db.execute = explain  # type: ignore[method-assign]
    try:
        call()
    finally:
        store._db.execute = run  # type: ignore[method-assign]
    return plan


def timed(call: Callable[[], object], seconds: float) -> tuple[int, float, float]:
    latencies = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - t0)
    return len(latencies), percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000


def run_one(kind: str, location: Path | str, args: argparse.Namespace) -> None:
    stores = [Store(location, node_id) for node_id in NODES]
    try:
        started = time.perf_counter()
        fill(stores, args)
        me = stores[0]
        pending = me.pending_callbacks()
        print(f"{kind}: filled in {time.perf_counter() - started:.0f} s; undone {me.count_undone_callbacks():,}, "
              f"a poll returns {len(pending)}")
        sequence = iter(range(10**9))
        calls = {
            "pending_callbacks (the poll, 0.2 s)": me.pending_callbacks,
            "take_over_callbacks (lease/4, none to take)": lambda: me.take_over_callbacks(int(time.time() * 1000)),
            "add_callback (each event)": lambda: me.add_callback(f"new-{next(sequence) % 100}", 1, "http://x", {}, 0),
        }
        for name, call in calls.items():
            n, p50, p99 = timed(call, args.seconds)
            print(f"| {kind} | {name} | {n:,} | {p50:.2f} | {p99:.2f} |")
        if kind == "PostgreSQL":
            for name in ("pending_callbacks", "take_over_callbacks"):
                print(f"{name}:\n" + "\n".join(explained(me, lambda: calls[next(c for c in calls if name in c)]())))
    finally:
        for store in stores:
            store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--history", type=int, default=100_000, help="tasks whose events were all delivered")
    parser.add_argument("--tasks", type=int, default=1000, help="tasks with events waiting")
    parser.add_argument("--done", type=int, default=20, help="delivered events per task")
    parser.add_argument("--undone", type=int, default=23, help="waiting events per task")
    parser.add_argument("--seconds", type=float, default=3.0, help="per call")
    args = parser.parse_args()
    print("| store | call | calls | p50 ms | p99 ms |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as directory:
        run_one("SQLite", Path(directory) / "bench.sqlite3", args)
    cluster = PostgresCluster(durable=False).start()  # fills faster; the polls only read
    try:
        run_one("PostgreSQL", cluster.create_database(), args)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
