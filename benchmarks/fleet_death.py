"""From a node's death (SIGKILL, while it records a stream) to the fleet seeing
it gone, as the store shows it to the survivors: the first moment the victim's
row in `nodes` has `lease_until_ms <= now` (the server's clock), its streams
rows then belonging to a gone node. engine.fleet's survivors hold the same rows
as of their last renewal and compare them with their own clock, so their
`Fleet.gone()` turns at the same lease_until_ms.

Also watched: the first line a survivor logs naming the victim after the kill
(what it does about a gone node, once engine does something), and, after
restarting the victim on its data dir, the time until its lease is live again.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.fleet_cluster import FleetUnderTest
from benchmarks.fleet_store import Streams
from benchmarks.percentiles import distribution

POLL_S = 0.02  # the store is read this often: the resolution of the times below
AFTER_EXPIRY_S = 3.0  # how long past the expiry a survivor's reaction is waited for
LEASE_ROW = ("SELECT lease_until_ms, renewed_ms, (extract(epoch FROM clock_timestamp()) * 1000)::bigint, "
             "(SELECT count(*) FROM streams WHERE node_id = %s) FROM nodes WHERE node_id = %s")


@dataclass
class LogWatch:
    """New lines of a log file naming `needle`, from where the file ends now."""
    path: Path
    needle: str

    def __post_init__(self):
        self.offset = self.path.stat().st_size

    def first_new(self) -> str | None:
        with open(self.path, "rb") as log:
            log.seek(self.offset)
            for line in log.read().decode(errors="replace").splitlines():
                if self.needle in line:
                    return line.strip()[:300]
        return None


def lease_row(fleet: FleetUnderTest, node_id: str) -> tuple[int, int, int, int]:
    [row] = fleet.counters.query(LEASE_ROW, (node_id, node_id))
    return row


def wait_renewed_after(fleet: FleetUnderTest, node_id: str, wall_s: float, timeout_s: float) -> float:
    """Wait until `node_id` renewed its lease after `wall_s`; returns that renewal's time."""
    deadline = time.monotonic() + timeout_s
    while True:
        lease_until_ms, renewed_ms, now_ms, _ = lease_row(fleet, node_id)
        if renewed_ms / 1000 > wall_s and lease_until_ms > now_ms:
            return renewed_ms / 1000
        if time.monotonic() > deadline:
            raise RuntimeError(f"{node_id} did not renew its lease within {timeout_s:.0f} s")
        time.sleep(POLL_S)


def one_death(fleet: FleetUnderTest, trial: int, say: Callable[[str], None]) -> dict:
    victim = fleet.nodes[1]
    name = fleet.name_of(victim)
    survivors = [n for n in fleet.nodes if n is not victim]
    streams = Streams(fleet, 1, 120.0, nodes=[victim], prefix=f"fleet-death-{trial}")
    streams.start(say)
    try:
        # kill at a random point of the renewal cycle, as a real death would come
        time.sleep(random.uniform(0.5, 0.5 + fleet.lease_s / 4))
        watches = [LogWatch(n.log_path, name) for n in survivors]
        os.kill(victim.process.pid, signal.SIGKILL)
        killed = time.time()
        victim.process.wait()
        victim.log_file.close()
        lease_until_ms, renewed_ms, _, _ = lease_row(fleet, name)
        expired_seen = streams_gone = reaction = reaction_at = None
        deadline = killed + fleet.lease_s + AFTER_EXPIRY_S
        while time.time() < deadline and (expired_seen is None or reaction is None):
            until_ms, _, now_ms, stream_rows = lease_row(fleet, name)
            if expired_seen is None and until_ms <= now_ms:
                expired_seen, streams_gone = now_ms / 1000, stream_rows
                deadline = time.time() + AFTER_EXPIRY_S
            if reaction is None:
                reaction = next((line for w in watches if (line := w.first_new())), None)
                reaction_at = time.time() if reaction else None
            time.sleep(POLL_S)
        result = {
            "lease_s": fleet.lease_s,
            "last_renewal_before_kill_s": round(killed - renewed_ms / 1000, 3),
            "kill_to_lease_end_s": round(lease_until_ms / 1000 - killed, 3),
            "kill_to_expired_in_store_s": round(expired_seen - killed, 3) if expired_seen else None,
            "victim_streams_rows_when_expired": streams_gone,
            "kill_to_survivor_log_s": round(reaction_at - killed, 3) if reaction_at else None,
            "survivor_log_line": reaction,
        }
        restarted = time.time()
        fleet.start_node(victim)
        ready = time.time()
        live_again = wait_renewed_after(fleet, name, restarted, 30.0)
        result["restart_to_ready_s"] = round(ready - restarted, 3)
        result["restart_to_lease_live_s"] = round(live_again - restarted, 3)
        say(f"death {trial + 1}: last renewal {result['last_renewal_before_kill_s']:.2f} s before the kill; "
            f"expired in the store {result['kill_to_expired_in_store_s']} s after it (lease {fleet.lease_s:g} s); "
            f"survivor log: {result['kill_to_survivor_log_s']} s; restarted, lease live after "
            f"{result['restart_to_lease_live_s']:.2f} s")
        return result
    finally:
        streams.stop()


def run_deaths(fleet: FleetUnderTest, trials: int, say: Callable[[str], None]) -> dict:
    results = [one_death(fleet, k, say) for k in range(trials)]
    measured = lambda key: distribution([r[key] for r in results if r[key] is not None])  # noqa: E731
    return {"lease_s": fleet.lease_s, "renewals_per_lease": 4, "poll_s": POLL_S, "trials": results,
            "kill_to_expired_in_store_s": measured("kill_to_expired_in_store_s"),
            "last_renewal_before_kill_s": measured("last_renewal_before_kill_s"),
            "kill_to_survivor_log_s": measured("kill_to_survivor_log_s"),
            "restart_to_lease_live_s": measured("restart_to_lease_live_s")}
