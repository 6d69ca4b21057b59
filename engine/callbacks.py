"""Status callbacks: written to the store's outbox first, then POSTed in order per
task, retried with a bounded backoff; never on the recording path.

In a fleet sharing a store, each task's events are one stream with one sender at a
time (engine.store.queries, `callback_senders`): the node that produced the event
that found the stream idle, whichever node produces the next ones, until its
backlog is done. A stream whose sender's lease ran out (engine.fleet) is taken
over by a live node, which goes on from the first event not done. Each event is
POSTed once, except when a sender dies (or loses the store, or stalls past its
lease) between a POST and the store hearing of its answer: the next sender sends
that event again. The body carries task_id and sequence for a receiver to dedupe.

Every delivery connects under the node's egress policy (engine/egress.py), so a
CallbackUrl whose name resolves into a refused network at delivery time reaches
nothing. Redirects are not followed: a 3xx is a failed delivery (a redirect can
point anywhere, and a POST turned into a GET would lose the body)."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from typing import Protocol

import aiohttp
import structlog

from engine import egress, metrics
from engine.clock import SYSTEM_CLOCK, Clock
from engine.config import NodeConfig
from engine.defaults import CALLBACK_TIMEOUT_S
from engine.fleet import LEASE_RENEWALS
from engine.store import AsyncStore, CallbackRecord

log = structlog.get_logger("callbacks")

POLL_S = 0.2
MAX_RETRY_DELAY_S = 300.0


def retry_delay(interval_s: float, attempts: int) -> float:
    """Backoff: the configured interval after the first failure, doubling after each
    further one (the hosted service retries twice, 5 s apart: this is never sooner)."""
    return min(MAX_RETRY_DELAY_S, interval_s * 2 ** (attempts - 1))


def signature(secret: str, timestamp: str, nonce: str) -> str:
    return hashlib.sha1("".join(sorted([secret, timestamp, nonce])).encode()).hexdigest()


class CallbackTransport(Protocol):
    async def post(self, url: str, body: dict) -> int:
        """POST `body` as JSON; returns the HTTP status. Raises aiohttp.ClientError or TimeoutError."""

    async def close(self) -> None: ...


class HttpTransport:
    def __init__(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CALLBACK_TIMEOUT_S))

    async def post(self, url: str, body: dict) -> int:
        # No redirects: a 3xx is a failed delivery (a redirect could lead into a refused network).
        async with self._session.post(url, json=body, allow_redirects=False) as response:
            return response.status

    async def close(self) -> None:
        await self._session.close()


class CallbackSender:
    def __init__(self, config: NodeConfig, store: AsyncStore, transport: CallbackTransport,
                 clock: Clock = SYSTEM_CLOCK):
        """`clock`: the fleet's (engine.fleet), whose wall time the leases are in."""
        self._config = config
        self._store = store
        self._transport = transport
        self._clock = clock
        # streams of a gone node are looked for as often as leases are renewed: a fraction of
        # a lease after it ran out, one cheap query (an index of the streams with a backlog)
        self._takeover_every_s = config.node_lease_s / LEASE_RENEWALS
        self._next_takeover = 0.0  # monotonic
        self._policy = egress.callback_policy(config.callback_deny)
        self._wake = asyncio.Event()
        self._next_attempt: dict[int, float] = {}  # callback id -> monotonic time
        self._in_flight: set[int] = set()
        self._runner: asyncio.Task | None = None
        self._store_away = False

    async def emit(self, task_id: str, room_id: str, task_url: str, event_type: int, message: str,
                   detail: dict) -> None:
        url = task_url or self._config.callback_url
        if not url:
            return
        body = {"app_id": self._config.app_id, "task_id": task_id, "room_id": room_id, "event_type": event_type,
                "message": message, "detail": detail}
        sequence = await self._store.add_callback(task_id, event_type, url, body, int(time.time() * 1000))
        log.info("callback_queued", task_id=task_id, event_type=event_type, sequence=sequence)
        self._wake.set()

    def start(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, drain_s: float = 0.0) -> None:
        deadline = time.monotonic() + drain_s
        while drain_s and time.monotonic() < deadline and (self._in_flight or await self._store.pending_callbacks(1)):
            await asyncio.sleep(POLL_S)
        if self._runner is not None:
            self._runner.cancel()
        await self._transport.close()

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), POLL_S)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self._poll()
                self._store_away = False
            except Exception:  # the store is away: try again at the next poll (said once per outage)
                if not self._store_away:
                    log.exception("callbacks_poll_failed")
                self._store_away = True

    async def _poll(self) -> None:
        now = time.monotonic()
        if now >= self._next_takeover:
            self._next_takeover = now + self._takeover_every_s
            taken = await self._store.take_over_callbacks(self._clock.wall_ms())
            if taken:
                log.warning("callbacks_taken_over", count=len(taken), tasks=taken[:20])
        for record in await self._store.pending_callbacks():
            if record.id in self._in_flight or self._next_attempt.get(record.id, 0) > now:
                continue
            self._in_flight.add(record.id)
            asyncio.get_running_loop().create_task(self._deliver(record))

    async def _deliver(self, record: CallbackRecord) -> None:
        try:
            delivered = await self._post(record)
            attempts = record.attempts + 1
            done = delivered or attempts > self._config.callback_retries
            await self._store.callback_attempted(record.id, delivered, int(time.time() * 1000) if done else None)
            metrics.CALLBACK_DELIVERIES.labels("delivered" if delivered else "failed").inc()
            if done:
                self._next_attempt.pop(record.id, None)
                if not delivered:
                    metrics.CALLBACKS_GIVEN_UP.inc()
                    log.error("callback_given_up", task_id=record.task_id, sequence=record.sequence,
                              event_type=record.event_type, attempts=attempts)
            else:
                metrics.CALLBACK_RETRIES.inc()
                self._next_attempt[record.id] = time.monotonic() + retry_delay(
                    self._config.callback_retry_interval_s, attempts)
        except Exception:  # the store is away: the event stays undone and is sent again
            log.exception("callback_outcome_not_stored", task_id=record.task_id, sequence=record.sequence)
        finally:
            self._in_flight.discard(record.id)
            self._wake.set()

    async def _post(self, record: CallbackRecord) -> bool:
        nonce = secrets.token_hex(8)
        timestamp = str(int(time.time()))
        body = {**record.body, "nonce": nonce, "timestamp": timestamp,
                "signature": signature(self._config.callback_secret, timestamp, nonce)}
        try:
            with egress.enforced(self._policy):  # the address actually connected to, after DNS
                status = await self._transport.post(record.url, body)
        except (aiohttp.ClientError, TimeoutError) as error:
            refused = isinstance(getattr(error, "os_error", None), egress.EgressRefused)
            log.warning("callback_address_refused" if refused else "callback_failed", task_id=record.task_id,
                        sequence=record.sequence, error=type(error).__name__)
            return False
        if not 200 <= status < 300:
            log.warning("callback_refused", task_id=record.task_id, sequence=record.sequence, status=status)
            return False
        return True
