"""fleet.md and fleet-store.png from the fleet-*.json results (benchmarks.fleet),
with the capacity arithmetic docs/scaling.md builds on."""

from __future__ import annotations

import json
from pathlib import Path

PHASES = ("store", "api", "death")
TOP_KINDS = 8
PG_CORE_TARGET = 0.7  # plan PostgreSQL's CPU to this share: headroom for vacuum, checkpoints, bursts


def load(out: Path, name: str) -> dict[str, dict]:
    """`<name>-<phase>.json` of each phase there is (not another name's: fleet-lease3-death is not fleet's)."""
    runs = {}
    for phase in PHASES:
        path = out / f"{name}-{phase}.json"
        if path.exists() and (run := json.loads(path.read_text())).get("kind") == "fleet":
            runs[phase] = run
    return runs


def _ms(d: dict, key: str) -> str:
    return f"{1000 * d[key]:.1f}" if d.get("n") else "-"


def capacity(store: dict) -> dict | None:
    """What one PostgreSQL core serves, from the streams window: its CPU per
    statement, then statements per stream, per task and per idle node. None when the
    window is too short for /proc to have counted any of PostgreSQL's CPU."""
    streams = store["phases"]["streams"]
    if streams["server_cpu_pct"] <= 0 or streams["statements_per_s"] <= 0:
        return None
    cpu_s_per_statement = streams["server_cpu_pct"] / 100 / streams["statements_per_s"]
    per_core = PG_CORE_TARGET / cpu_s_per_statement
    per_stream, per_task = store["per_stream"]["statements_per_s"], store["per_task"]["statements_per_s"]
    per_node = store["per_node_idle"]["statements_per_s"]
    return {"cpu_ms_per_statement": round(1000 * cpu_s_per_statement, 4),
            "statements_per_s_per_core_at_target": round(per_core),
            "streams_per_core": round(per_core / per_stream) if per_stream > 0 else None,
            "idle_tasks_per_core": round(per_core / per_task) if per_task > 0 else None,
            "idle_nodes_per_core": round(per_core / per_node) if per_node > 0 else None,
            "commits_per_stream_per_s": store["per_stream"]["commits_per_s"]}


def store_lines(store: dict) -> list[str]:
    c = store["config"]
    lines = [f"## The store's load (`{store['command']}`)", "",
             f"{c['nodes']} nodes, lease {store['lease_s']:g} s; windows of {c['seconds']:g} s; {c['tasks']} idle "
             f"tasks; {c['streams']} plain-RTP streams ({c['clip']}) each recorded by one task on its node, "
             f"{c['storage']}. Counted by PostgreSQL (pg_stat_statements, the nodes' role only; commits from "
             f"pg_stat_database). {store['load_note']}: statement counts do not depend on it, CPU shares do.", "",
             "| window | statements/s | BEGIN/COMMIT/s | commits/s | execution ms/s | PostgreSQL CPU % |",
             "|---|---|---|---|---|---|"]
    for label, phase in store["phases"].items():
        lines.append(f"| {label} | {phase['statements_per_s']:.1f} | {phase['framing_per_s']:.1f} | "
                     f"{phase['database_per_s']['xact_commit']:.1f} | {phase['exec_ms_per_s']:.2f} | "
                     f"{phase['server_cpu_pct']:.1f} |")
    lines += ["", "| per | statements/s | commits/s | WAL bytes/s | PostgreSQL CPU % | top statements/s |",
              "|---|---|---|---|---|---|"]
    for label, key in (("idle node", "per_node_idle"), ("idle task", "per_task"), ("recording stream", "per_stream")):
        unit = store[key]
        top = ", ".join(f"{kind} {rate:.3f}" for kind, rate in list(unit["by_kind_per_s"].items())[:TOP_KINDS])
        lines.append(f"| {label} | {unit['statements_per_s']:.3f} | {unit['commits_per_s']:.3f} | "
                     f"{unit.get('wal_bytes_per_s', 0):,.0f} | {unit['server_cpu_pct']:.3f} | {top} |")
    cap = capacity(store)
    if cap is None:
        return lines + ["", "PostgreSQL's CPU in the streams window was below what /proc counts (10 ms ticks): "
                            "no capacity from this run; run a longer `--seconds`.", ""]
    many = lambda n: f"{n:,}" if n is not None else "unbounded (no cost measured)"  # noqa: E731
    lines += ["", f"PostgreSQL CPU per statement in the streams window (background work included): "
              f"{cap['cpu_ms_per_statement']} ms, so one core at {int(100 * PG_CORE_TARGET)} % serves "
              f"{cap['statements_per_s_per_core_at_target']:,} statements/s: {many(cap['streams_per_core'])} recording "
              f"streams, or {many(cap['idle_tasks_per_core'])} idle tasks, or {many(cap['idle_nodes_per_core'])} idle "
              f"nodes (docs/scaling.md).", ""]
    return lines


def api_lines(api: dict) -> list[str]:
    lines = [f"## API load over {api['nodes']} nodes (`{api['command']}`)", "",
             f"{api['rate_requested_per_s']:g} requests/s asked, {api['rate_achieved_per_s']:g} answered/s, "
             f"{api['errors']} errors; PostgreSQL CPU {api['server_cpu_pct']:.1f} %; "
             f"{api['statements_per_call']} statements and {api['commits_per_call']} commits per call. "
             f"{api['pinning']}; {api['load_note']}: latencies include that load.", "",
             "| action | n | p50 ms | p95 ms | p99 ms | max ms |", "|---|---|---|---|---|---|"]
    for action, d in api["latency_s"].items():
        lines.append(f"| {action} | {d.get('n', 0)} | {_ms(d, 'p50')} | {_ms(d, 'p95')} | {_ms(d, 'p99')} | "
                     f"{_ms(d, 'max')} |")
    if api["error_samples"]:
        lines += ["", "Errors (first ones): " + "; ".join(f"`{e}`" for e in api["error_samples"])]
    return lines + [""]


def death_lines(death: dict) -> list[str]:
    lines = [f"## A node's death (`{death['command']}`)", "",
             f"SIGKILL of node-b while it records one stream, at a random point of its renewal cycle "
             f"(every {death['lease_s'] / death['renewals_per_lease']:g} s); the store read every "
             f"{1000 * death['poll_s']:.0f} ms. {death['load_note']}.", "",
             "| trial | last renewal before kill s | kill -> lease end s | kill -> expired in store s | "
             "victim's stream rows then | kill -> survivor log s | restart -> lease live s |",
             "|---|---|---|---|---|---|---|"]
    for k, t in enumerate(death["trials"], 1):
        lines.append(f"| {k} | {t['last_renewal_before_kill_s']} | {t['kill_to_lease_end_s']} | "
                     f"{t['kill_to_expired_in_store_s']} | {t['victim_streams_rows_when_expired']} | "
                     f"{t['kill_to_survivor_log_s'] if t['kill_to_survivor_log_s'] is not None else 'none'} | "
                     f"{t['restart_to_lease_live_s']} |")
    d = death["kill_to_expired_in_store_s"]
    if d.get("n"):
        lines += ["", f"Kill -> gone: {d['p50']} s median, {d['max']} s max, for a lease of {death['lease_s']:g} s "
                  f"(bounds: {0.75 * death['lease_s']:g} s to {death['lease_s']:g} s plus one poll)."]
    lines += [f"Survivor log lines: {sorted({t['survivor_log_line'] for t in death['trials'] if t['survivor_log_line']}) or 'none'}", ""]
    return lines


def plot(out: Path, name: str, store: dict) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(figsize=(8, 3.5))
    for phase in dict.fromkeys(p["phase"] for p in store["timeline"]):
        points = [p for p in store["timeline"] if p["phase"] == phase]
        axes.plot([p["t"] for p in points], [p["statements_per_s"] for p in points], marker="o", label=phase)
    axes.set_xlabel("time since the first window (s)")
    axes.set_ylabel("statements/s (PostgreSQL)")
    axes.set_ylim(bottom=0)
    axes.set_title(f"The store's load, {store['config']['nodes']} nodes")
    axes.legend()
    fig.tight_layout()
    path = out / f"{name}-store.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def write(out: Path, name: str) -> Path:
    runs = load(out, name)
    lines = ["# A fleet on one PostgreSQL", "",
             "Regenerated by `python -m benchmarks.fleet` from the fleet-*.json beside it.", ""]
    if "store" in runs:
        lines += store_lines(runs["store"])
        if png := plot(out, name, runs["store"]):
            lines += [f"![statements per second]({png})", ""]
    if "api" in runs:
        lines += api_lines(runs["api"])
    if "death" in runs:
        lines += death_lines(runs["death"])
    path = out / f"{name}.md"
    path.write_text("\n".join(lines))
    return path
