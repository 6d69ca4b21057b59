"""A small run of the fleet benchmark (benchmarks/fleet.py), so that it cannot
rot: two nodes on a private PostgreSQL, every phase for a second or two."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import fleet_report
from benchmarks.fleet_cluster import Snapshot, Usage, statement_kind
from testkit.postgres import BIN_GLOB, server_bin

REPO = Path(__file__).resolve().parents[1]
LEASE_S = 1.2
SMALL = ("--nodes", "2", "--lease", str(LEASE_S), "--seconds", "2", "--tasks", "2", "--streams", "1",
         "--api-seconds", "2", "--api-rate", "16", "--deaths", "1", "--sample-interval", "1")


def test_statements_are_counted_by_kind_and_framing_apart():
    assert statement_kind("INSERT INTO files (file_id) VALUES ($1) ON CONFLICT (file_id) DO UPDATE") == "INSERT files"
    assert statement_kind("SELECT * FROM callbacks WHERE done_ms IS NULL") == "SELECT callbacks"
    assert statement_kind("UPDATE nodes SET lease_until_ms=$1") == "UPDATE nodes"
    database = dict.fromkeys(("xact_commit", "xact_rollback", "tup_returned", "tup_fetched", "tup_inserted",
                              "tup_updated", "tup_deleted", "blks_read", "blks_hit"), 0)
    before = Snapshot(10.0, {"SELECT * FROM nodes": 5, "BEGIN": 1}, {"SELECT * FROM nodes": 1.0}, database)
    after = Snapshot(12.0, {"SELECT * FROM nodes": 9, "BEGIN": 3, "INSERT INTO files VALUES ($1)": 6},
                     {"SELECT * FROM nodes": 2.0, "INSERT INTO files VALUES ($1)": 3.0},
                     {**database, "xact_commit": 8})
    usage = Usage.between(before, after)
    assert usage.statements_per_s == 5.0 and usage.framing_per_s == 1.0  # (4 + 6) / 2 s; BEGIN apart
    assert usage.by_kind_per_s == {"INSERT files": 3.0, "SELECT nodes": 2.0}
    assert usage.exec_ms_per_s == 2.0 and usage.database_per_s["xact_commit"] == 4.0


def test_a_window_too_short_for_the_servers_cpu_gives_no_capacity_rather_than_a_crash():
    unit = {"statements_per_s": 1.0, "commits_per_s": 1.0, "server_cpu_pct": 0.0, "by_kind_per_s": {}}
    store = {"phases": {"streams": {"server_cpu_pct": 0.0, "statements_per_s": 36.0}}, "per_stream": unit,
             "per_task": unit, "per_node_idle": unit}
    assert fleet_report.capacity(store) is None
    store["phases"]["streams"]["server_cpu_pct"] = 0.7
    assert fleet_report.capacity(store)["statements_per_s_per_core_at_target"] == 3600


needs_postgres = pytest.mark.skipif(server_bin() is None,
                                    reason=f"no PostgreSQL server under {BIN_GLOB} (bash .ci/install-postgres)")


@needs_postgres
def test_the_store_ceiling_counts_calls_and_the_servers_cpu():
    done = subprocess.run([sys.executable, "-m", "benchmarks.store_queries", "--pg-fast", "--seconds", "0.5",
                           "--ceiling", "1,3"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith("| upsert_file")
            or line.startswith("| claim_nonce")]
    assert [(r[0], r[1]) for r in rows] == [("| upsert_file", "1"), ("| upsert_file", "3"), ("| claim_nonce", "1"),
                                           ("| claim_nonce", "3")]
    for row in rows:
        calls_per_s, cpu_ms_per_call = float(row[2].replace(",", "")), float(row[6].rstrip(" |"))
        assert calls_per_s > 50 and 0 < cpu_ms_per_call < 5, row


@needs_postgres
def test_a_small_fleet_run_measures_every_phase(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks.fleet", *SMALL, "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "statements/s" in done.stdout and "death 1:" in done.stdout  # progress lines

    store = json.loads((tmp_path / "fleet-store.json").read_text())
    assert store["kind"] == "fleet" and store["config"]["nodes"] == 2
    assert set(store["phases"]) == {"idle", "tasks", "streams"}
    # every node renews its lease (an upsert, then a read of the members) 4 times per lease
    idle_node = store["per_node_idle"]["by_kind_per_s"]
    assert 4 / LEASE_S * 0.7 < idle_node["INSERT nodes"] < 4 / LEASE_S * 1.3, idle_node
    # a recording stream writes its file's progress about once a second
    assert 0.5 < store["per_stream"]["by_kind_per_s"]["INSERT files"] < 1.5, store["per_stream"]
    assert store["timeline"] and {p["phase"] for p in store["timeline"]} >= {"idle"}

    api = json.loads((tmp_path / "fleet-api.json").read_text())
    assert api["errors"] == 0, api["error_samples"]
    assert set(api["latency_s"]) == {"StartRecord", "DescribeRecordStatus", "DescribeTasks", "StopRecord"}
    assert all(d["n"] == 8 and 0 < d["p50"] <= d["p99"] for d in api["latency_s"].values())
    assert api["statements_per_call"] > 1  # a signed call claims its nonce, at least

    death = json.loads((tmp_path / "fleet-death.json").read_text())
    [trial] = death["trials"]
    # the last renewal came at most a quarter lease before the kill: gone 3/4 to 1 lease after it
    assert 0.5 * LEASE_S < trial["kill_to_expired_in_store_s"] < LEASE_S + 0.3, trial  # slack: a loaded machine delays renewals
    assert abs(trial["kill_to_expired_in_store_s"] - trial["kill_to_lease_end_s"]) < 0.2, trial
    assert trial["victim_streams_rows_when_expired"] == 1
    assert trial["restart_to_lease_live_s"] > 0

    summary = (tmp_path / "fleet.md").read_text()
    for heading in ("## The store's load", "## API load over 2 nodes", "## A node's death"):
        assert heading in summary
