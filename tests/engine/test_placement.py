"""engine.placement: which node a publish goes to. The choice itself as a pure
function; then whole nodes on twins (fake workers) sharing one real store file,
each with its own lease row, as a fleet would share PostgreSQL."""

from contextlib import asynccontextmanager

import pytest

from engine import errors
from engine.placement import choose_node
from engine.store import NodeRecord
from tests.engine.control_plane import OFFER, start_twins


def member(node_id: str, free: int, state: str = "ready") -> NodeRecord:
    return NodeRecord(node_id, f"http://{node_id}:8080", state, free, 10, 0, 0, 1)


def chosen(members, me="me", holders=()) -> str | None:
    node = choose_node(members, me, holders)
    return node and node.node_id


def test_the_ready_member_with_the_most_free_streams_is_chosen_never_this_node():
    assert chosen([member("me", 9), member("a", 2), member("b", 5), member("c", 4)]) == "b"
    assert chosen([member("me", 9), member("b", 3), member("a", 3)]) == "a"  # a tie: the smallest id, stably


def test_full_draining_and_starting_members_are_never_chosen():
    assert chosen([member("a", 0), member("b", 50, "draining"), member("c", 50, "starting"),
                   member("d", 50, "stopped")]) is None
    assert chosen([member("a", 0), member("b", 50, "draining"), member("c", 1)]) == "c"
    assert chosen([member("me", 5)]) is None  # a fleet of one


def test_a_node_holding_the_room_wins_while_it_has_room():
    members = [member("a", 1), member("b", 7), member("c", 3)]
    assert chosen(members, holders={"a"}) == "a"
    assert chosen(members, holders={"a", "c"}) == "c"
    assert chosen([member("a", 0), member("b", 7)], holders={"a"}) == "b"  # the holder is full
    assert chosen([member("a", 5, "draining"), member("b", 7)], holders={"a"}) == "b"
    assert chosen([member("me", 5), member("b", 7)], holders={"me"}) == "b"  # never itself


@asynccontextmanager
async def fleet(tmp_path, *limits: int, **config):
    """Nodes named node-1.. sharing one store, node i taking `limits[i]` streams."""
    store_url = f"sqlite:///{tmp_path / 'fleet.sqlite3'}"
    nodes = []
    try:
        for i, limit in enumerate(limits, 1):
            twins = await start_twins(tmp_path / f"node-{i}", store_url=store_url, node_id=f"node-{i}",
                                      advertised_url=f"http://node-{i}.test:8080", max_streams=limit, **config)
            nodes.append(twins.node)
        yield nodes
    finally:
        for node in nodes:
            await node.stop(deadline_s=2)


@pytest.mark.asyncio
async def test_a_full_node_sends_a_publish_to_the_freest_ready_node(tmp_path):
    async with fleet(tmp_path, 1, 3, 5) as (one, _, three):
        assert await one.redirect_publish("rtp", "room", "a") is None  # it has room: no store read, no 307
        await one.publish_rtp("room", "a", "u", "u", OFFER)
        three.admission.drain()
        await three.fleet.renew()
        redirect = await one.redirect_publish("whip", "room", "b")
        assert (redirect.node_id, redirect.url, redirect.reason) == ("node-2", "http://node-2.test:8080", "full")
        one.admission.drain()
        assert (await one.redirect_publish("rtp", "room", "b")).reason == "draining"


@pytest.mark.asyncio
async def test_two_full_nodes_that_each_think_the_other_free_do_not_bounce_a_publisher(tmp_path):
    """Both rows say "1 free" (as of joining); each node fills up between renewals."""
    async with fleet(tmp_path, 1, 1) as (one, two):
        await one.publish_rtp("room", "a", "u", "u", OFFER)
        await two.publish_rtp("room", "b", "u", "u", OFFER)
        assert [(n.node_id, n.free_streams) for n in two.fleet.live()] == [("node-1", 1), ("node-2", 1)]
        assert (await one.redirect_publish("rtp", "room", "c")).node_id == "node-2"  # stale: node-2 is full
        assert await two.redirect_publish("rtp", "room", "c") is None  # node-1 wrote "full" before its 307
        with pytest.raises(errors.IngestError) as busy:
            await two.publish_rtp("room", "c", "u", "u", OFFER)
        assert (busy.value.status, busy.value.retry_after) == (503, 5)  # the busy answer, as alone


@pytest.mark.asyncio
async def test_with_room_affinity_a_publish_goes_to_the_node_holding_its_room_while_it_has_room(tmp_path):
    async with fleet(tmp_path, 5, 2, room_affinity=True) as (one, two):
        await two.publish_rtp("room", "a", "u", "u", OFFER)
        redirect = await one.redirect_publish("rtp", "room", "b")
        assert (redirect.node_id, redirect.reason) == ("node-2", "room_affinity")
        assert await two.redirect_publish("rtp", "room", "b") is None  # the holder takes it
        assert await one.redirect_publish("rtp", "another-room", "b") is None
        await two.publish_rtp("room", "b", "u", "u", OFFER)  # node-2 is full now, its row not yet renewed:
        assert (await one.redirect_publish("rtp", "room", "c")).node_id == "node-2"
        redirect = await two.redirect_publish("whip", "room", "c")  # a full holder sends it on
        assert (redirect.node_id, redirect.reason) == ("node-1", "full")
        assert await one.redirect_publish("rtp", "room", "c") is None  # node-2 said "full": node-1 records it


@pytest.mark.asyncio
async def test_without_room_affinity_a_room_may_span_nodes(tmp_path):
    async with fleet(tmp_path, 5, 5) as (one, two):
        await two.publish_rtp("room", "a", "u", "u", OFFER)
        assert await one.redirect_publish("rtp", "room", "b") is None
