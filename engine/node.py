"""The recording node: the composition root, built whole by `RecordingNode.create`,
and the narrow facade the HTTP API talks to (engine.api.RecordingService).

    store (SQLite) <- callbacks, uploader -> files
    tasks (lifecycle) <-> events (per-worker pipe) <-> streams (publishing, workers) -> supervisor
    admission: whether publishing and StartRecord are taken
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import structlog

from contract import protocol
from engine import defaults, errors, models, views
from engine.admission import Admission, NodeState
from engine.callbacks import CallbackSender, CallbackTransport, HttpTransport
from engine.capacity import Capacity, default_max_streams
from engine.clock import SYSTEM_CLOCK, Clock
from engine.config import NodeConfig
from engine.events import WorkerEvents
from engine.files import FileBook, TaskDestinations
from engine.fleet import Fleet, Membership
from engine.metrics import IngestTotals, NodeSnapshot, UploadMetrics, render_metrics
from engine.placement import Placement, Redirect
from engine.ports import PortAllocator
from engine.pulls import PullSources
from engine.rooms import PublishedStream, Rooms
from engine.snapshots import SnapshotBook
from engine.status import ACTIVE_TASK_STATUSES, ENDED_TASK_STATUSES
from engine.store import AsyncStore, Store
from engine.streams import Spawner, StreamRegistry
from engine.supervisor import Supervisor
from engine.task_sync import TaskSync
from engine.tasks import TaskManager
from storage_adapters.spool import Spool
from storage_adapters.uploader import Uploader, UploadResult

log = structlog.get_logger("node")

UPLOAD_DRAIN_POLL_S = 0.2


class RecordingNode:
    def __init__(self, *, config: NodeConfig, store: AsyncStore, callbacks: CallbackSender, uploader: Uploader,
                 admission: Admission, tasks: TaskManager, streams: StreamRegistry, pulls: PullSources,
                 events: WorkerEvents, supervisor: Spawner, fleet: Fleet, placement: Placement,
                 task_sync: TaskSync):
        """Made by `create`, which starts the parts first; this starts the ticker."""
        self.config = config
        self.store = store
        self.callbacks = callbacks
        self.uploader = uploader
        self.admission = admission
        self.tasks = tasks
        self.streams = streams
        self.pulls = pulls  # streams the node subscribes to (POST /pull/...)
        self.events = events
        self.supervisor = supervisor
        self.fleet = fleet
        self.placement = placement  # which node of the fleet a publish goes to
        self.task_sync = task_sync
        self.ingest = IngestTotals()
        self._ticker = asyncio.get_running_loop().create_task(self._tick())
        self._stats_poller = asyncio.get_running_loop().create_task(self._poll_stats())

    @classmethod
    async def create(cls, config: NodeConfig, *, spawner: Spawner | None = None, clock: Clock = SYSTEM_CLOCK,
                     callback_transport: CallbackTransport | None = None) -> RecordingNode:
        """A started node that takes work. The unit tests replace the worker processes,
        the clock and the callbacks' HTTP client; everything else is the real thing."""
        config.data_dir.mkdir(parents=True, exist_ok=True)
        config.storage_root.mkdir(parents=True, exist_ok=True)
        store = AsyncStore(await asyncio.to_thread(Store, config.store_location, config.node_id))
        callbacks = CallbackSender(config, store, callback_transport or HttpTransport(), clock)

        # The uploader tells the FileBook what it stored; the FileBook asks it what is pending.
        async def object_uploaded(result: UploadResult) -> None:
            await files.object_uploaded(result)
            await snapshots.object_uploaded(result)

        destinations = TaskDestinations(config, store)
        uploader = Uploader(Spool(config.spool_root, config.spool_max_bytes), destinations.resolve, object_uploaded,
                            observer=UploadMetrics())
        files = FileBook(store, destinations, uploader, callbacks.emit)
        snapshots = SnapshotBook(destinations, callbacks.emit)
        rooms, events = Rooms(), WorkerEvents()
        tasks = TaskManager(config, store, rooms, events, callbacks.emit, files, snapshots, clock)
        supervisor = spawner or Supervisor(config.worker_ready_timeout_s)
        admission = Admission(Capacity(config.max_streams or default_max_streams(), config.max_tasks, config.cpu_cap))
        streams = StreamRegistry(config, store, rooms, PortAllocator(*config.rtp_port_range), supervisor, admission,
                                 events, tasks, clock)

        def membership() -> Membership:
            capacity = admission.capacity
            cpu_full = capacity.stream_refusal(0) is not None
            return Membership(str(admission.state), 0 if cpu_full else max(0, capacity.max_streams - streams.count),
                              max(0, capacity.max_tasks - sum(tasks.status_counts().values())))

        fleet = Fleet(store, config.node_id, config.base_url, config.node_lease_s, membership, clock)
        destinations.urls = replace(destinations.urls, peers=fleet.peer_urls)
        # Live again before it looks at its files: the others stop marking them interrupted.
        await fleet.renew()
        uploader.start()
        await tasks.load()
        await supervisor.warm_up()
        pulls = streams.pulls = PullSources(config, streams)
        await streams.restore()
        task_sync = TaskSync(store, tasks, fleet, clock)
        placement = Placement(fleet, store, admission, lambda: streams.load, lambda room: bool(rooms.streams(room)),
                              config.room_affinity)
        node = cls(config=config, store=store, callbacks=callbacks, uploader=uploader, admission=admission,
                   tasks=tasks, streams=streams, pulls=pulls, events=events, supervisor=supervisor, fleet=fleet,
                   placement=placement, task_sync=task_sync)
        admission.open()
        await fleet.join()
        # Sending starts once a member: another node takes over the event streams of a node it
        # does not see live, so a node sending before it joined could send beside the taker.
        callbacks.start()
        await task_sync.start()  # the fleet's tasks: this node records their rooms' streams it holds
        log.info("node_ready", data_dir=str(config.data_dir))
        return node

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(defaults.TICK_S)
            try:
                self.admission.capacity.sample((w.pid for w in self.supervisor.workers if w.pid), time.monotonic())
                await self.tasks.tick()
                await self.streams.close_lingering()
            except Exception:
                log.exception("tick_failed")

    async def _poll_stats(self) -> None:
        while True:
            await asyncio.sleep(defaults.STATS_POLL_S)
            try:
                await self.poll_ingest()
            except Exception:
                log.exception("stats_poll_failed")

    async def poll_ingest(self) -> None:
        """Take in every worker's per-track counters (for /metrics)."""
        streams = [(s, s.worker) for s in self.streams.published() if s.worker is not None]
        replies = await asyncio.gather(*(w.request(protocol.GetStats, timeout=defaults.STATS_TIMEOUT_S)
                                         for _, w in streams), return_exceptions=True)
        seen = set()
        for (stream, worker), reply in zip(streams, replies, strict=True):
            if isinstance(reply, protocol.Reply) and isinstance(reply.payload, protocol.StreamStats):
                key = f"{stream.resource_id}/{worker.pid}"
                seen.add(key)
                self.ingest.observe(key, str(stream.kind), reply.payload.tracks)
        self.ingest.keep_only(seen)

    async def stop(self, deadline_s: float = 10.0) -> None:
        """Drain: refuse new work, finish every file, then give uploads and callbacks
        until the deadline. Streams and tasks stay in the store for the next start."""
        deadline = time.monotonic() + deadline_s
        self.admission.drain()
        await self.fleet.renew()  # the others see it draining (and stop sending it publishers) at once
        self._ticker.cancel()
        self._stats_poller.cancel()
        self.task_sync.stop()
        await self.poll_ingest()  # the last counts of streams about to end
        await self.pulls.close()
        await self.streams.unpublish_all()
        await self.supervisor.stop_all()
        await self.events.wait_idle(deadline)
        while self.uploader.backlog and time.monotonic() < deadline:
            await asyncio.sleep(UPLOAD_DRAIN_POLL_S)
        await self.uploader.stop()
        await self.callbacks.stop(drain_s=max(0.0, deadline - time.monotonic()))
        await self.fleet.leave()
        await asyncio.to_thread(self.store.close)
        log.info("node_stopped")

    def kill_workers(self) -> None:
        self.supervisor.kill_all()

    # the facade the HTTP API talks to
    @property
    def state(self) -> NodeState:
        return self.admission.state

    async def start_record(self, request: models.StartRecordRequest) -> str:
        return await self.tasks.start_record(request, lambda tasks: self.admission.admit_task(tasks, request))

    async def stop_record(self, task_id: str) -> None:
        await self.tasks.stop_record(task_id)

    async def pause_record(self, task_id: str) -> None:
        await self.tasks.pause_record(task_id)

    async def resume_record(self, task_id: str) -> None:
        await self.tasks.resume_record(task_id)

    async def take_snapshot(self, task_id: str) -> None:
        await self.tasks.take_snapshot(task_id)

    # Describe*: any task of the fleet, with its files from every node
    async def describe_record_status(self, task_id: str) -> dict:
        record = await self.store.get_task(task_id)
        if record is None:
            raise errors.TaskNotFound()
        return views.task_status(record, await self.store.files_of_task(task_id), self.tasks.files.signed_url)

    async def describe_tasks(self, request: models.DescribeTasksRequest) -> dict:
        statuses = ACTIVE_TASK_STATUSES if request.status == 2 else ENDED_TASK_STATUSES
        total, records = await self.store.page_tasks(
            statuses, request.room_id, request.start_time_ms, request.end_time_ms,
            (request.page_offset - 1) * request.page_size, request.page_size)
        return views.task_page(request.page_offset, request.page_size, total, records)

    async def publish_rtp(self, room_id: str, stream_id: str, user_id: str, user_name: str,
                          sdp_text: str, announcer: str = "") -> PublishedStream:
        return await self.streams.publish_rtp(room_id, stream_id, user_id, user_name, sdp_text, announcer)

    async def publish_whip(self, room_id: str, stream_id: str, user_id: str, user_name: str,
                           sdp_text: str) -> PublishedStream:
        return await self.streams.publish_whip(room_id, stream_id, user_id, user_name, sdp_text)

    async def redirect_publish(self, kind: str, room_id: str, stream_id: str) -> Redirect | None:
        return await self.placement.redirect(kind, room_id, stream_id)

    async def unpublish(self, resource_id: str) -> None:
        await self.streams.unpublish(resource_id)

    async def stream_stats(self, resource_id: str) -> dict[str, Any]:
        return await self.streams.stats(resource_id)

    async def metrics(self) -> bytes:
        await self.poll_ingest()
        spool_bytes = await asyncio.to_thread(self.uploader.spool_bytes)
        snapshot = NodeSnapshot(
            self.admission.capacity, streams=self.streams.count, workers=len(self.supervisor.workers),
            active_tasks=self.tasks.status_counts(), ended_tasks=await self.store.count_tasks(ENDED_TASK_STATUSES),
            upload_backlog=self.uploader.backlog, spool_bytes=spool_bytes, spool_max_bytes=self.config.spool_max_bytes,
            callback_backlog=await self.store.count_undone_callbacks(), ready=self.state is NodeState.READY)
        return render_metrics(snapshot, self.ingest)
