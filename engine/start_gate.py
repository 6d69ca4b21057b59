"""StartRecord's gate on one node: a ClientTaskId names one task (a repeat, or one
being created right now, gets that task's answer without being admitted again),
and admission counts the tasks being created with those already active."""

from __future__ import annotations

import asyncio
import secrets
import string
from collections.abc import Awaitable, Callable

import structlog

from engine import defaults
from engine.store import AsyncStore, Conflict

log = structlog.get_logger("tasks")

_TASK_ID_ALPHABET = string.ascii_letters + string.digits


def new_task_id() -> str:
    return "".join(secrets.choice(_TASK_ID_ALPHABET) for _ in range(defaults.TASK_ID_LENGTH))


class StartGate:
    def __init__(self, store: AsyncStore):
        self._store = store
        self._lock = asyncio.Lock()
        self.being_created = 0  # admitted, not yet active
        self._creating: dict[str, asyncio.Future[str]] = {}  # the ClientTaskIds of those, and their answers

    async def enter(self, client_id: str | None, admit: Callable[[int], None],
                    create: Callable[[], Awaitable[str]]) -> tuple[str, bool]:
        """(task id, whether `create` made it). `admit(tasks being created)` is asked only
        of a new ClientTaskId (it raises to refuse): a repeat is never refused for capacity.
        `create` makes the task active before it returns, so the count never dips."""
        async with self._lock:  # looking up a ClientTaskId, admitting and counting in are one step
            creating = self._creating.get(client_id) if client_id is not None else None
            existing = None
            if client_id is not None and creating is None:
                existing = await self._store.get_task_by_client_id(client_id)
            repeat = creating is not None or existing is not None
            if not repeat:
                admit(self.being_created)
                self.being_created += 1
                creating = asyncio.get_running_loop().create_future()
                if client_id is not None:
                    self._creating[client_id] = creating
        if existing is not None:
            return existing.task_id, False
        assert creating is not None
        if repeat:
            return await asyncio.shield(creating), False  # the same ClientTaskId, still being created: its answer
        try:
            task_id = await create()
        except Conflict as conflict:  # another node of the fleet took this ClientTaskId a moment ago
            existing = await self._store.get_task_by_client_id(client_id or "")
            if existing is None:
                creating.set_exception(conflict)
                creating.exception()
                raise
            log.info("client_task_id_taken", task_id=existing.task_id, client_task_id=client_id)
            creating.set_result(existing.task_id)
            return existing.task_id, False
        except BaseException as error:
            creating.set_exception(error)
            creating.exception()  # a refusal no repeat waits for is not an unretrieved exception
            raise
        finally:
            self.being_created -= 1
            if client_id is not None:
                self._creating.pop(client_id, None)
        creating.set_result(task_id)
        return task_id, True
