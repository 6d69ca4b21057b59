import asyncio
import time

import aiohttp
import pytest
import pytest_asyncio

from engine.callbacks import CallbackSender, retry_delay, signature
from engine.store import AsyncStore, Store
from tests.engine.control_plane import eventually, unit_config
from tests.engine.fakes import FakeTransport

RETRIES = 2


def test_the_specs_signature_test_vector():
    assert signature("secret", "1470820198", "123412") == "5bd59fd62953a8059fb7eaba95720f66d19e4517"


def test_retries_back_off_and_are_never_sooner_than_the_interval():
    assert [retry_delay(5.0, n) for n in (1, 2, 3)] == [5.0, 10.0, 20.0]
    assert retry_delay(5.0, 30) == 300.0


# The sender on the store's outbox (SQLite and PostgreSQL), with an in-memory transport.
@pytest_asyncio.fixture
async def store(store_location):
    store = AsyncStore(Store(store_location))
    yield store
    store.close()


def start_sender(tmp_path, store: AsyncStore, transport: FakeTransport) -> CallbackSender:
    config = unit_config(tmp_path, callback_retries=RETRIES, callback_retry_interval_s=0.01,
                         callback_secret="callback-secret")
    callbacks = CallbackSender(config, store, transport)
    callbacks.start()
    return callbacks


async def until_settled(store: AsyncStore) -> None:
    async def nothing_pending() -> bool:
        return await store.pending_callbacks() == []

    await eventually(nothing_pending)


@pytest.mark.asyncio
async def test_a_refused_callback_is_retried_then_given_up_and_the_next_event_follows(tmp_path, store):
    transport = FakeTransport(500)
    callbacks = start_sender(tmp_path, store, transport)
    await callbacks.emit("task-a", "room", "", 7, "stopped", {})
    await callbacks.emit("task-a", "room", "", 1, "uploaded", {})
    await until_settled(store)
    await callbacks.stop()
    # each 1 + RETRIES times, in order: event 1 waited until event 7 was given up
    assert transport.sequences() == [("task-a", 0, 7)] * (1 + RETRIES) + [("task-a", 1, 1)] * (1 + RETRIES)
    post = transport.posts[0]
    assert post["signature"] == signature("callback-secret", post["timestamp"], post["nonce"])
    assert (post["app_id"], post["room_id"], post["message"], post["detail"]) == (1, "room", "stopped", {})


@pytest.mark.asyncio
async def test_an_unreachable_receiver_is_retried_until_it_answers(tmp_path, store):
    transport = FakeTransport(aiohttp.ClientConnectionError(), TimeoutError(), 200)
    callbacks = start_sender(tmp_path, store, transport)
    await callbacks.emit("task-b", "room", "", 7, "stopped", {})
    await until_settled(store)
    await callbacks.emit("task-b", "room", "", 1, "uploaded", {})
    await until_settled(store)
    await callbacks.stop()
    assert transport.sequences() == [("task-b", 0, 7)] * 3 + [("task-b", 1, 1)]


@pytest.mark.asyncio
async def test_an_undelivered_callback_survives_a_restart(tmp_path, store):
    down = FakeTransport(aiohttp.ClientConnectionError())
    first = start_sender(tmp_path, store, down)
    await first.emit("task-c", "room", "", 7, "stopped", {})

    async def tried() -> bool:
        return bool(down.posts)

    await eventually(tried)
    await first.stop()  # the node goes down before the receiver answered
    up = FakeTransport(200)
    second = start_sender(tmp_path, store, up)
    await until_settled(store)
    await second.stop()
    assert up.sequences() == [("task-c", 0, 7)]


# Two nodes' senders on one store (SQLite and PostgreSQL): each event once, in order per task.
@pytest_asyncio.fixture
async def two_stores(store_location):
    """Two live members of a fleet (leases for a minute), opened before any row."""
    stores = [AsyncStore(Store(store_location, node_id=f"node-{i}")) for i in (1, 2)]
    for i, store in enumerate(stores):
        await store.renew_node(f"http://node-{i}", "ready", 1, 1, int(time.time() * 1000), 60_000)
    yield stores
    for store in stores:
        store.close()


def posted_in_order(transport: FakeTransport, tasks: list[str], events: int) -> None:
    by_task = {task_id: [s for t, s, _ in transport.sequences() if t == task_id] for task_id in tasks}
    assert by_task == {task_id: list(range(events)) for task_id in tasks}


@pytest.mark.asyncio
async def test_two_nodes_producing_one_tasks_events_send_each_once_in_order(tmp_path, two_stores):
    transport = FakeTransport(200)  # one receiver: its posts in the order both nodes made them
    senders = [start_sender(tmp_path, store, transport) for store in two_stores]
    tasks = [f"task-{n}" for n in range(8)]
    for round_ in range(6):
        for n, task_id in enumerate(tasks):  # each task's events come from both nodes, in turn
            await senders[(n + round_) % 2].emit(task_id, "room", "", 201 + round_ % 2, "paused", {})
        await asyncio.sleep(0.01)  # the senders at work meanwhile
    for store in two_stores:
        await until_settled(store)
    for sender in senders:
        await sender.stop()
    posted_in_order(transport, tasks, 6)


@pytest.mark.asyncio
async def test_a_gone_nodes_undelivered_events_are_sent_by_a_live_node(tmp_path, two_stores):
    gone, live = two_stores
    now_ms = int(time.time() * 1000)
    await gone.renew_node("http://gone", "ready", 1, 1, now_ms - 20_000, 10_000)  # its lease ran out
    await live.renew_node("http://live", "ready", 1, 1, now_ms, 10_000)
    for event in (7, 1, 5):
        await gone.add_callback("task-d", event, "http://127.0.0.1:9/callbacks",
                                {"task_id": "task-d", "event_type": event}, now_ms)
    transport = FakeTransport(200)
    sender = start_sender(tmp_path, live, transport)

    async def all_done() -> bool:
        return await live.count_undone_callbacks() == 0

    await eventually(all_done)
    await sender.stop()
    assert transport.sequences() == [("task-d", 0, 7), ("task-d", 1, 1), ("task-d", 2, 5)]
