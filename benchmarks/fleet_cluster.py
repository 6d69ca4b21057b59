"""A fleet under measurement: one private PostgreSQL (durable, with
pg_stat_statements loaded) and K `recnode serve` processes sharing it, plus the
server's own counters of what the nodes asked of it.

The counters are PostgreSQL's, not the harness's guesses: pg_stat_statements
(calls per normalized statement, updated as each statement ends) and
pg_stat_database (transactions and rows; a backend reports those at most once
a second, an idle one within 10 s, so they are read over windows of 20 s and
more). Only the nodes' role (APP_ROLE) is counted: the harness's own
queries run as the superuser.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from benchmarks.config import admission_args
from benchmarks.procs import CpuWindow, Pinning
from testkit.node import NodeProcess
from testkit.ports import free_port, free_udp_range
from testkit.postgres import APP_ROLE, SUPERUSER, PostgresCluster

NODE_NAMES = "abcdefghijklmnopqrstuvwxyz"
UDP_PORTS_PER_NODE = 200
RTP_TIMEOUT_S = 180  # publishers on a shared CPU take several seconds to load their clip before the first packet
# statements that only frame a transaction: counted apart from the work
FRAMING = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|SET|SHOW|DISCARD|DEALLOCATE)\b", re.I)
WAL_COUNTERS = ("wal_records", "wal_fpi", "wal_bytes")  # pg_stat_wal: cluster-wide (the harness's reads write none)
DATABASE_COUNTERS = ("xact_commit", "xact_rollback", "tup_returned", "tup_fetched", "tup_inserted", "tup_updated",
                     "tup_deleted", "blks_read", "blks_hit")


@dataclass(frozen=True)
class Snapshot:
    at: float  # time.monotonic()
    statements: dict[str, int]  # normalized statement -> calls
    statement_ms: dict[str, float]  # normalized statement -> total execution time
    database: dict[str, int]


def statement_kind(query: str) -> str:
    """`SELECT tasks`, `INSERT nonces`, ...: what a statement does to which table."""
    verb = query.split(None, 1)[0].upper() if query.strip() else "?"
    if FRAMING.match(query):
        return verb
    table = re.search(r"\b(?:FROM|INTO|UPDATE)\s+([a-z_]+)", query, re.I)
    return f"{verb} {table.group(1).lower() if table else '?'}"


@dataclass(frozen=True)
class Usage:
    """What the store did between two snapshots, per second."""
    seconds: float
    statements_per_s: float  # the work: framing (BEGIN/COMMIT) excluded
    framing_per_s: float
    by_kind_per_s: dict[str, float]
    exec_ms_per_s: float  # server time spent executing those statements
    database_per_s: dict[str, float]

    @classmethod
    def between(cls, before: Snapshot, after: Snapshot) -> Usage:
        seconds = after.at - before.at
        calls = {q: n - before.statements.get(q, 0) for q, n in after.statements.items()}
        work = {q: n for q, n in calls.items() if n > 0 and not FRAMING.match(q)}
        framing = sum(n for q, n in calls.items() if n > 0 and FRAMING.match(q))
        kinds: dict[str, float] = {}
        for q, n in work.items():
            kinds[statement_kind(q)] = kinds.get(statement_kind(q), 0) + n / seconds
        exec_ms = sum(ms - before.statement_ms.get(q, 0.0) for q, ms in after.statement_ms.items())
        return cls(seconds, sum(work.values()) / seconds, framing / seconds,
                   dict(sorted(kinds.items(), key=lambda kv: -kv[1])), exec_ms / seconds,
                   {k: (after.database[k] - before.database.get(k, 0)) / seconds for k in after.database})

    def as_dict(self, digits: int = 3) -> dict:
        return {"seconds": round(self.seconds, 2), "statements_per_s": round(self.statements_per_s, digits),
                "framing_per_s": round(self.framing_per_s, digits), "exec_ms_per_s": round(self.exec_ms_per_s, digits),
                "by_kind_per_s": {k: round(v, digits) for k, v in self.by_kind_per_s.items()},
                "database_per_s": {k: round(v, digits) for k, v in self.database_per_s.items()}}


class StoreCounters:
    """Reads the server's counters for one database, as the superuser."""

    def __init__(self, cluster: PostgresCluster, database: str):
        self.database = database
        self._cluster = cluster
        self._connection = psycopg.connect(cluster.url("postgres", SUPERUSER), autocommit=True)
        self._connection.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")

    def snapshot(self) -> Snapshot:
        at = time.monotonic()
        rows = self._connection.execute(
            "SELECT s.query, sum(s.calls), sum(s.total_exec_time) FROM pg_stat_statements s "
            "JOIN pg_database d ON d.oid = s.dbid JOIN pg_roles r ON r.oid = s.userid "
            "WHERE d.datname = %s AND r.rolname = %s GROUP BY s.query", (self.database, APP_ROLE)).fetchall()
        database = self._connection.execute(
            f"SELECT {', '.join(DATABASE_COUNTERS)} FROM pg_stat_database WHERE datname = %s",
            (self.database,)).fetchone()
        wal = self._connection.execute(f"SELECT {', '.join(WAL_COUNTERS)} FROM pg_stat_wal").fetchone()
        return Snapshot(at, {q: int(n) for q, n, _ in rows}, {q: float(ms) for q, _, ms in rows},
                        dict(zip(DATABASE_COUNTERS + WAL_COUNTERS, (int(v) for v in (*database, *wal)))))

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """A read of the fleet's own tables (as the superuser, in the fleet's database)."""
        with psycopg.connect(self._cluster.url(self.database, SUPERUSER), autocommit=True) as connection:
            return connection.execute(sql, params).fetchall()

    def close(self) -> None:
        self._connection.close()


@dataclass
class FleetUnderTest:
    """K nodes named node-a, node-b, ... on one PostgreSQL database."""
    workdir: Path
    nodes_wanted: int = 3
    lease_s: float = 10.0
    pinning: Pinning = field(default_factory=Pinning)
    max_streams: int = 64
    cluster: PostgresCluster | None = None
    store_url: str = ""
    nodes: list[NodeProcess] = field(default_factory=list)
    counters: StoreCounters | None = None
    server_cpu: CpuWindow | None = None

    def start(self, say=print) -> FleetUnderTest:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.pinning.recorder_context():  # the database shares the nodes' CPU, as a load, not a load generator
            self.cluster = PostgresCluster(durable=True, settings=(
                "shared_preload_libraries=pg_stat_statements", "pg_stat_statements.track=top",
                "pg_stat_statements.max=5000")).start()
        self.store_url = self.cluster.create_database("recnode_fleet")
        self.counters = StoreCounters(self.cluster, "recnode_fleet")
        say(f"PostgreSQL on 127.0.0.1:{self.cluster.port} (durable, pg_stat_statements)")
        admission = admission_args("off", self.max_streams)
        for k in range(self.nodes_wanted):
            name = f"node-{NODE_NAMES[k]}"
            port = free_port()
            node = NodeProcess(self.workdir / name, port, free_udp_range(UDP_PORTS_PER_NODE),
                               self.workdir / f"{name}.log", extra_env={"RECNODE_STORE_URL": self.store_url},
                               extra_args=("--node-id", name, "--node-lease", f"{self.lease_s:g}",
                                           "--advertised-url", f"http://127.0.0.1:{port}",
                                           "--rtp-timeout", str(RTP_TIMEOUT_S), *admission))
            self.nodes.append(node)
            self.start_node(node)
            say(f"{name} ready on :{port}")
        self.server_cpu = CpuWindow([self.cluster.pid])
        return self

    def start_node(self, node: NodeProcess) -> None:
        with self.pinning.recorder_context():
            node.start()

    def live_nodes(self) -> list[NodeProcess]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def name_of(self, node: NodeProcess) -> str:
        return node.data_dir.name

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        if self.counters is not None:
            self.counters.close()
        if self.cluster is not None:
            self.cluster.stop()
