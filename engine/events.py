"""The pipe between the control plane and the workers: requests down, events up.

Each worker's events are handled in order, through one queue and one consumer per
worker; its exit goes through the same queue, so it is handled after everything
it said. Who handles them is given per worker (`listen`): the stream registry
routes exits and inactivity to itself and the rest to the task manager.
`request` and `flush` are what the task manager needs of a stream's worker
(engine.active_task.StreamControl).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog

from contract import protocol
from engine.rooms import PublishedStream, StreamWorker
from engine.supervisor import WorkerGone

log = structlog.get_logger("events")


@dataclass(frozen=True, eq=False)
class WorkerExited:
    worker: StreamWorker
    code: int | None


WorkerMessage = protocol.Event | WorkerExited
MessageHandler = Callable[[PublishedStream, WorkerMessage], Awaitable[None]]
OnEvent = Callable[[StreamWorker, protocol.Event], None]
OnExit = Callable[[StreamWorker, int | None], None]


class _Flush:
    """Resolved when the consumer reaches it: everything the worker said before is handled."""

    def __init__(self, future: asyncio.Future):
        self.future = future


class WorkerEvents:
    def __init__(self) -> None:
        self._queues: dict[int, asyncio.Queue] = {}  # by id() of the worker
        self._running: set[asyncio.Task] = set()  # consumers and background work drained at stop

    def listen(self, stream: PublishedStream, handle: MessageHandler) -> tuple[OnEvent, OnExit]:
        """The callbacks a worker of `stream` is started with: what it says, and its
        exit, reach `handle` in order."""

        def on_event(worker: StreamWorker, event: protocol.Event) -> None:
            self._queue_for(worker, stream, handle).put_nowait(event)

        def on_exit(worker: StreamWorker, code: int | None) -> None:
            self._queue_for(worker, stream, handle).put_nowait(WorkerExited(worker, code))

        return on_event, on_exit

    async def request(self, stream: PublishedStream, make: Callable[[int], protocol.Request]) -> protocol.Reply:
        worker = stream.worker
        if worker is None:
            raise WorkerGone("the stream has no worker")
        return await worker.request(make)

    async def flush(self, stream: PublishedStream) -> None:
        """Wait until every event the stream's worker sent so far has been handled."""
        queue = self._queues.get(id(stream.worker)) if stream.worker is not None else None
        if queue is None:
            return
        future = asyncio.get_running_loop().create_future()
        queue.put_nowait(_Flush(future))
        await future

    def background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Work a handler starts but must not wait for (it would wait on its own queue)."""
        self._track(asyncio.get_running_loop().create_task(coroutine))

    async def wait_idle(self, deadline: float) -> None:
        """At stop, once the workers are told to exit: their last events reach the store."""
        for task in list(self._running):
            await asyncio.wait([task], timeout=max(0.1, deadline - time.monotonic()))

    def _track(self, task: asyncio.Task) -> None:
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def _queue_for(self, worker: StreamWorker, stream: PublishedStream, handle: MessageHandler) -> asyncio.Queue:
        queue = self._queues.get(id(worker))
        if queue is None:
            queue = self._queues[id(worker)] = asyncio.Queue()
            self._track(asyncio.get_running_loop().create_task(self._consume(worker, stream, queue, handle)))
        return queue

    async def _consume(self, worker: StreamWorker, stream: PublishedStream, queue: asyncio.Queue,
                       handle: MessageHandler) -> None:
        while True:
            item = await queue.get()
            if isinstance(item, _Flush):
                item.future.set_result(None)
                continue
            try:
                await handle(stream, item)
            except Exception:
                log.exception("worker_event_failed", room_id=stream.room_id, stream_id=stream.stream_id)
            if isinstance(item, WorkerExited):
                self._queues.pop(id(worker), None)
                while not queue.empty():  # nothing more comes from this worker
                    leftover = queue.get_nowait()
                    if isinstance(leftover, _Flush):
                        leftover.future.set_result(None)
                return
