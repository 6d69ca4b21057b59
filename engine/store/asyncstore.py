"""The Store's methods as coroutines for the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from engine.store.queries import Store


class AsyncStore:
    """The Store's methods as coroutines, run one at a time on a dedicated thread:
    calls run in the order they were made (a task's callbacks take their sequence
    numbers in the order they were emitted), whichever database is underneath."""

    def __init__(self, store: Store):
        self._store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._store, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, lambda: method(*args, **kwargs))

        return call

    def close(self) -> None:
        self._executor.submit(self._store.close).result()
        self._executor.shutdown()
