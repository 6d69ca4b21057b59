"""Worker processes: started from a preloaded template, handshake, control pipe, watch.

The template is multiprocessing's fork server with `workers.preload` imported:
the asyncio supervisor itself is never forked. Each worker gets an already
validated WorkerConfig and the child end of a pipe; it must answer Ready within
a timeout. Its death is seen through its sentinel and never affects others.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import multiprocessing.connection
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog

from contract import protocol
from contract.worker import WorkerConfig
from engine.defaults import WORKER_STOP_TIMEOUT_S
from workers.main import entry

log = structlog.get_logger("supervisor")

PRELOAD = ["workers.preload"]


@contextlib.contextmanager
def main_module_hidden() -> Iterator[None]:
    """multiprocessing runs the parent's `__main__` again in every child it starts (named by
    `__spec__`, or by `__file__` for a script such as the `recnode` console script), so that
    what `__main__` defines can be unpickled there. A worker needs nothing from it, and
    running it after the fork (engine.cli and the engine modules it imports) cost each worker
    ~3 MB of private memory: while a worker is started, the child is not told about it."""
    main = sys.modules["__main__"]
    saved = {name: main.__dict__[name] for name in ("__spec__", "__file__") if name in main.__dict__}
    main.__spec__ = None
    main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        main.__dict__.update(saved)


def _start(process: multiprocessing.process.BaseProcess) -> None:
    with main_module_hidden():
        process.start()


class WorkerStartError(Exception):
    def __init__(self, reason: str, ports_in_use: tuple[int, ...] = ()):
        super().__init__(reason)
        self.ports_in_use = ports_in_use


class WorkerGone(Exception):
    pass


EventHandler = Callable[["WorkerHandle", Any], None]
ExitHandler = Callable[["WorkerHandle", int | None], None]


class WorkerHandle:
    def __init__(self, process: multiprocessing.process.BaseProcess, conn: multiprocessing.connection.Connection,
                 config: WorkerConfig, on_event: EventHandler, on_exit: ExitHandler):
        self.process = process
        self.conn = conn
        self.config = config
        self._on_event = on_event
        self._on_exit = on_exit
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self.ready: asyncio.Future[protocol.Ready] = asyncio.get_running_loop().create_future()
        self.exited = asyncio.Event()
        self.exitcode: int | None = None
        self.stopping = False

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def watch(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.conn.fileno(), self._on_readable)
        loop.add_reader(self.process.sentinel, self._on_sentinel)

    def _on_readable(self) -> None:
        try:
            while self.conn.poll():
                self._dispatch(self.conn.recv())
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(self.conn.fileno())

    def _dispatch(self, message: Any) -> None:
        if isinstance(message, protocol.Reply):
            future = self._pending.pop(message.request_id, None)
            if future is not None and not future.done():
                future.set_result(message)
        elif isinstance(message, protocol.Ready):
            if not self.ready.done():
                self.ready.set_result(message)
        elif isinstance(message, protocol.StartFailed):
            if not self.ready.done():
                self.ready.set_exception(WorkerStartError(message.reason, message.ports_in_use))
        else:
            self._on_event(self, message)

    def _on_sentinel(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self.process.sentinel)
        self._on_readable()  # events written just before exiting
        try:
            loop.remove_reader(self.conn.fileno())
        except (ValueError, OSError):
            pass
        self.process.join(0)
        self.exitcode = self.process.exitcode
        if not self.ready.done():
            self.ready.set_exception(WorkerStartError(f"worker exited during start-up (code {self.exitcode})"))
        for future in self._pending.values():
            if not future.done():
                future.set_exception(WorkerGone(f"worker {self.pid} exited"))
        self._pending.clear()
        self.exited.set()
        self.conn.close()
        self._on_exit(self, self.exitcode)

    async def request(self, make: Callable[[int], protocol.Request], timeout: float = 10.0) -> protocol.Reply:
        if self.exited.is_set():
            raise WorkerGone(f"worker {self.pid} has exited")
        request_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            self.conn.send(make(request_id))
        except (OSError, ValueError) as error:
            self._pending.pop(request_id, None)
            raise WorkerGone(str(error)) from error
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(request_id, None)

    async def stop(self, timeout: float = WORKER_STOP_TIMEOUT_S) -> None:
        """Ask the worker to finish its files and exit; kill it if it will not."""
        self.stopping = True
        if self.exited.is_set():
            return
        try:
            await self.request(protocol.StopStream, timeout=timeout)
            await asyncio.wait_for(self.exited.wait(), timeout)
        except (WorkerGone, TimeoutError):
            pass
        if not self.exited.is_set():
            log.warning("worker_kill", pid=self.pid)
            self.process.kill()
            await self.exited.wait()


class Supervisor:
    def __init__(self, ready_timeout_s: float):
        self._ready_timeout_s = ready_timeout_s
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(PRELOAD)
        # Process.start() talks to the fork server synchronously: keep it off the loop.
        self._starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spawn")
        self.workers: set[WorkerHandle] = set()

    async def warm_up(self) -> None:
        """Start the template process now rather than on the first publish."""
        from multiprocessing import forkserver

        await asyncio.get_running_loop().run_in_executor(self._starter, forkserver.ensure_running)

    async def spawn(self, config: WorkerConfig, on_event: EventHandler, on_exit: ExitHandler) -> WorkerHandle:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(target=entry, args=(config, child_conn), daemon=False,
                                    name=f"recnode-worker:{config.stream.room_id}/{config.stream.stream_id}")
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._starter, _start, process)
        finally:
            child_conn.close()
        handle = WorkerHandle(process, parent_conn, config, on_event, self._forget(on_exit))
        self.workers.add(handle)
        handle.watch()
        try:
            await asyncio.wait_for(asyncio.shield(handle.ready), self._ready_timeout_s)
        except TimeoutError:
            log.error("worker_ready_timeout", pid=handle.pid)
            handle.stopping = True
            process.kill()
            raise WorkerStartError("worker did not become ready in time") from None
        except WorkerStartError:
            handle.stopping = True
            raise
        return handle

    def _forget(self, on_exit: ExitHandler) -> ExitHandler:
        def exited(handle: WorkerHandle, code: int | None) -> None:
            self.workers.discard(handle)
            on_exit(handle, code)

        return exited

    async def stop_all(self) -> None:
        await asyncio.gather(*(w.stop() for w in list(self.workers)), return_exceptions=True)
        self._starter.shutdown(wait=False)

    def kill_all(self) -> None:
        """No time is left to stop them: their files keep every fragment written."""
        for worker in list(self.workers):
            worker.stopping = True
            worker.process.kill()
