"""The node's membership of a fleet that shares one store (--store-url).

Every node, on its own SQLite too (a fleet of one), keeps a row in `nodes`: its
advertised URL, its state and its free capacity, under a lease it renews
`LEASE_RENEWALS` times per lease (--node-lease). A node whose lease ran out
(killed, partitioned, stopped) is gone: the others stop counting its streams in
their rooms. Each renewal also reads the other members, so the node always knows
the live fleet as of one renewal ago, without a query per decision.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from engine.clock import SYSTEM_CLOCK, Clock
from engine.store import AsyncStore, NodeRecord

log = structlog.get_logger("fleet")

LEASE_RENEWALS = 4  # renewals per lease: a node survives three missed ones (a slow store, a GC pause)


@dataclass(frozen=True)
class Membership:
    """What a node says of itself at each renewal."""
    state: str  # engine.admission.NodeState
    free_streams: int
    free_tasks: int


class Fleet:
    def __init__(self, store: AsyncStore, node_id: str, url: str, lease_s: float,
                 describe: Callable[[], Membership], clock: Clock = SYSTEM_CLOCK):
        self.node_id = node_id
        self.url = url
        self.lease_s = lease_s
        self._store = store
        self._describe = describe
        self._clock = clock
        self._members: list[NodeRecord] = []
        self._gone_ids: set[str] | None = None  # as of the last renewal (None: before the first)
        self._renewer: asyncio.Task | None = None

    async def join(self) -> None:
        """Renew once (so the others see this node at once), then on a timer."""
        await self.renew()
        await self._store.rejoin_fleet(self._clock.wall_ms())
        self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())
        log.info("fleet_joined", node_id=self.node_id, url=self.url, lease_s=self.lease_s,
                 live_nodes=[n.node_id for n in self.live()])

    async def leave(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
        await self._store.leave_fleet(self._clock.wall_ms())

    async def renew(self) -> None:
        me = self._describe()
        await self._store.renew_node(self.url, me.state, me.free_streams, me.free_tasks, self._clock.wall_ms(),
                                     int(self.lease_s * 1000))
        self._members = await self._store.nodes()
        self._note_comings_and_goings()

    def _note_comings_and_goings(self) -> None:
        """One line when a member's lease is first seen run out, and when it is back."""
        gone = {n.node_id for n in self.gone()}
        if self._gone_ids is not None:
            for node_id in sorted(gone - self._gone_ids):
                log.warning("fleet_node_gone", node_id=self.node_id, gone_node=node_id)
            for node_id in sorted(self._gone_ids - gone):
                log.info("fleet_node_back", node_id=self.node_id, back_node=node_id)
        self._gone_ids = gone

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / LEASE_RENEWALS)
            try:
                await self.renew()
            except Exception:  # the store is away: the lease runs out unless it comes back in time
                log.exception("fleet_renew_failed", node_id=self.node_id)

    def live(self) -> list[NodeRecord]:
        """The members whose lease has not run out (this node included, once joined)."""
        now = self._clock.wall_ms()
        return [n for n in self._members if n.lease_until_ms > now]

    def is_live(self, node_id: str) -> bool:
        return node_id == self.node_id or any(n.node_id == node_id for n in self.live())

    def peer_urls(self) -> list[str]:
        """The advertised URLs of the other members, live or gone (a gone one may come back)."""
        return [n.url for n in self._members if n.node_id != self.node_id]

    def gone(self) -> list[NodeRecord]:
        """Members whose lease ran out: killed, partitioned or stopped."""
        now = self._clock.wall_ms()
        return [n for n in self._members if n.lease_until_ms <= now and n.node_id != self.node_id]
