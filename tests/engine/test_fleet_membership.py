"""engine.fleet on a real store (SQLite; the same queries run on PostgreSQL in
test_store.py) and a clock the test moves: who is live, and when a node is gone."""

import pytest
from structlog.testing import capture_logs

from engine.fleet import LEASE_RENEWALS, Fleet, Membership
from engine.store import AsyncStore, Store


class Clock:
    def __init__(self) -> None:
        self.now_ms = 1_000_000

    def monotonic(self) -> float:
        return self.now_ms / 1000

    def wall_ms(self) -> int:
        return self.now_ms

@pytest.mark.asyncio
async def test_a_node_that_stops_renewing_is_gone_after_its_lease(tmp_path):
    clock = Clock()
    path = tmp_path / "fleet.sqlite3"
    stores = [AsyncStore(Store(path, f"node-{i}")) for i in (1, 2)]
    me = Membership("ready", 10, 20)
    one = Fleet(stores[0], "node-1", "http://one", 10.0, lambda: me, clock)
    two = Fleet(stores[1], "node-2", "http://two", 10.0, lambda: me, clock)
    try:
        await one.join()
        await two.join()
        await one.renew()
        assert [n.node_id for n in one.live()] == ["node-1", "node-2"] and one.gone() == []
        assert one.is_live("node-2") and not one.is_live("node-3")
        await two.leave()  # renews no more
        clock.now_ms += 9_999
        await one.renew()
        assert [n.node_id for n in one.gone()] == ["node-2"]  # leaving ended its lease at once
    finally:
        await one.leave()
        for store in stores:
            store.close()

@pytest.mark.asyncio
async def test_a_killed_node_stays_live_until_its_lease_runs_out(tmp_path):
    clock = Clock()
    stores = [AsyncStore(Store(tmp_path / "fleet.sqlite3", f"node-{i}")) for i in (1, 2)]
    me = Membership("ready", 1, 1)
    watcher = Fleet(stores[0], "node-1", "http://one", 10.0, lambda: me, clock)
    killed = Fleet(stores[1], "node-2", "http://two", 10.0, lambda: me, clock)
    try:
        await killed.renew()  # its last renewal before it dies (no leave)
        clock.now_ms += 9_999
        await watcher.renew()
        assert watcher.is_live("node-2")
        clock.now_ms += 1
        assert not watcher.is_live("node-2") and [n.node_id for n in watcher.gone()] == ["node-2"]
        with capture_logs() as logs:
            await watcher.renew()
            await watcher.renew()  # said once
            await killed.renew()  # back
            await watcher.renew()
        assert [(e["event"], e.get("gone_node") or e.get("back_node")) for e in logs] == [
            ("fleet_node_gone", "node-2"), ("fleet_node_back", "node-2")]
        assert LEASE_RENEWALS >= 3  # a node survives missed renewals before it counts as gone
    finally:
        for store in stores:
            store.close()
