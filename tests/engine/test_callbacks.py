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
