"""Where a publish goes in a fleet: here, or another node (307 Temporary Redirect).

A publish (WHIP offer or plain-RTP announce) that reaches a node which is full
or draining goes to the live, ready member with the most free streams; with
--room-affinity, one that reaches a node not holding the room goes to the live
node already holding a stream of it, while that node has room. With no node to
go to, the node answers as it would alone (busy, or it takes the stream).

No redirect loops: a redirected request carries nothing special, so the bound
comes from the store. Before answering 307 a node renews its lease (its own row
then says full or draining, as it is) and reads the members afresh, and it only
sends a publisher to a member whose row says ready with free streams. So a node
that passed a publisher on because it is full is seen full by every node that
reads the store after it: a chain of such redirects visits each node at most
once (unless a node frees up meanwhile, which is progress); with no node free,
it ends in the busy answer once it met the nodes whose rows were a renewal old
(between two nodes: after at most one hop). A room-affinity redirect goes to the room's
holder only; if that holder was in fact full, it passes the publisher on, and
being "full" in the store from then on, it is chosen by nobody else.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

import structlog

from engine import metrics
from engine.admission import Admission, NodeState
from engine.fleet import Fleet
from engine.store import AsyncStore, NodeRecord

log = structlog.get_logger("placement")


@dataclass(frozen=True)
class Redirect:
    node_id: str
    url: str  # the chosen node's advertised base URL
    reason: str  # "full", "draining" or "room_affinity"


def choose_node(members: Iterable[NodeRecord], me: str, holders: Collection[str] = ()) -> NodeRecord | None:
    """The node to send a publish to instead of `me`: among the (live) members, a ready
    one with free streams, not `me`; one of `holders` (the nodes holding the room) if
    any qualifies; the most free streams first, then the smallest node id."""
    free = [n for n in members if n.node_id != me and n.state == NodeState.READY and n.free_streams > 0]
    pool = [n for n in free if n.node_id in holders] or free
    return min(pool, key=lambda n: (-n.free_streams, n.node_id), default=None)


class Placement:
    def __init__(self, fleet: Fleet, store: AsyncStore, admission: Admission, load: Callable[[], int],
                 holds_room: Callable[[str], bool], room_affinity: bool):
        """`load`: the streams published or being published here; `holds_room`: whether
        this node has a stream of a room (WHIP ones too, which the store does not list)."""
        self._fleet = fleet
        self._store = store
        self._admission = admission
        self._load = load
        self._holds_room = holds_room
        self._room_affinity = room_affinity

    async def redirect(self, kind: str, room_id: str, stream_id: str) -> Redirect | None:
        """Where this publish should go instead, or None: this node answers it."""
        refusal = self._admission.stream_refusal(self._load())
        holders: set[str] = set()
        if self._room_affinity and not self._holds_room(room_id):
            holders = await self._store.room_nodes(room_id) - {self._fleet.node_id}
        if refusal is None and not holders:
            return None
        try:
            await self._fleet.renew()  # the bound on loops: see the module's docstring
        except Exception:  # the store is away: answer as a node alone would
            log.exception("placement_store_unavailable", room_id=room_id, stream_id=stream_id)
            return None
        live = self._fleet.live()
        if refusal is None:
            target = choose_node([n for n in live if n.node_id in holders], self._fleet.node_id)
            reason = "room_affinity"
        else:
            target = choose_node(live, self._fleet.node_id, holders)
            reason = "full" if self._admission.state is NodeState.READY else str(self._admission.state)
        if target is None:
            return None
        log.info("publish_redirected", input=kind, room_id=room_id, stream_id=stream_id, reason=reason,
                 why=refusal or "the room is on another node", to_node=target.node_id, to_url=target.url,
                 free_streams=target.free_streams)
        metrics.PUBLISH_REDIRECTS.labels(kind, reason).inc()
        return Redirect(target.node_id, target.url, reason)
