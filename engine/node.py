"""The recording node: wires store, rooms, tasks and the worker supervisor.

Worker events are handled in order per stream through one queue each; a worker's
exit goes through the same queue, so it is handled after everything it said.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import structlog

from contract import protocol
from contract.codes import InputKind, OfferRefusal
from contract.tuning import MediaTuning
from contract.worker import PullSpec, StreamSpec, WorkerConfig
from engine import defaults, errors
from engine.callbacks import CallbackSender
from engine.capacity import Capacity, default_max_streams
from engine.config import NodeConfig
from engine.files import FileBook
from engine.ports import PortAllocator, PortsExhausted
from engine.pulls import PullSources
from engine.rooms import PublishedStream, Rooms
from engine.sdp import RtpOffer, SdpError, parse_rtp_offer, rtp_answer
from engine.store import AsyncStore, Store, StreamRecord
from engine.supervisor import Supervisor, WorkerGone, WorkerHandle, WorkerStartError
from engine.tasks import TaskManager, now_ms
from engine.uploader import Uploader
from storage_adapters.spool import Spool

log = structlog.get_logger("node")

SPAWN_ATTEMPTS = 3
WHIP_TIMEOUT_S = 15.0  # offer -> answer, ICE gathering included
RETRY_AFTER_S = 5


class _Flush:
    """Resolved when the consumer reaches it: everything the worker said before is handled."""

    def __init__(self, future: asyncio.Future):
        self.future = future


class _WorkerExited:
    def __init__(self, handle: WorkerHandle, code: int | None):
        self.handle = handle
        self.code = code


class RecordingNode:
    def __init__(self, config: NodeConfig):
        self.config = config
        self.rooms = Rooms()
        self.ports = PortAllocator(*config.rtp_port_range)
        self.supervisor = Supervisor(config.worker_ready_timeout_s)
        self.store: AsyncStore | None = None
        self.tasks: TaskManager | None = None
        self.callbacks: CallbackSender | None = None
        self.uploader: Uploader | None = None
        self._ticker: asyncio.Task | None = None
        self.ready = False
        self.draining = False
        self._publishing: set[tuple[str, str]] = set()
        self.capacity = Capacity(config.max_streams or default_max_streams(), config.max_tasks, config.cpu_cap)
        self._queues: dict[int, asyncio.Queue] = {}
        self._consumers: set[asyncio.Task] = set()
        self.pulls = PullSources(self)  # streams the node subscribes to (POST /pull/...)

    async def start(self) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self.config.storage_root.mkdir(parents=True, exist_ok=True)
        store = await asyncio.to_thread(Store, self.config.store_path)
        self.store = AsyncStore(store)
        self.callbacks = CallbackSender(self.config, self.store)
        self.callbacks.start()
        self.uploader = Uploader(Spool(self.config.spool_root, self.config.spool_max_bytes),
                                 dict(self.config.storage_endpoints), self._object_uploaded)
        files = FileBook(self.config, self.store, self.uploader.pending_keys, self.callbacks.emit)
        self.tasks = TaskManager(self.config, self.store, self.rooms, self.request, self.flush, self.callbacks.emit,
                                 files)
        self.uploader.start()
        await self.tasks.load()
        await self.supervisor.warm_up()
        await self._restore_streams()
        self._ticker = asyncio.get_running_loop().create_task(self._tick())
        self.ready = True
        log.info("node_ready", data_dir=str(self.config.data_dir))

    async def _tick(self) -> None:
        assert self.tasks is not None
        while True:
            await asyncio.sleep(defaults.TICK_S)
            try:
                self.capacity.sample((w.pid for w in self.supervisor.workers if w.pid), time.monotonic())
                await self.tasks.tick(time.monotonic())
                for stream in self.rooms.lingering():
                    if not self.tasks.keeps_open(stream.room_id, stream.stream_id):
                        self.rooms.take_lingering(stream.room_id, stream.stream_id)
                        if isinstance(stream.worker, WorkerHandle):
                            await stream.worker.stop()
            except Exception:
                log.exception("tick_failed")

    async def _object_uploaded(self, result) -> None:
        assert self.tasks is not None
        await self.tasks.files.object_uploaded(result)

    async def stop(self, deadline_s: float = 10.0) -> None:
        """Drain: refuse new work, finish every file, then give uploads and callbacks
        until the deadline. Streams and tasks stay in the store for the next start."""
        deadline = time.monotonic() + deadline_s
        self.draining = True
        self.ready = False
        if self._ticker is not None:
            self._ticker.cancel()
        await self.pulls.close()
        await asyncio.gather(*(self.unpublish(s.resource_id) for s in self.rooms.all()), return_exceptions=True)
        await self.supervisor.stop_all()
        for consumer in list(self._consumers):  # the workers' last events reach the store
            await asyncio.wait([consumer], timeout=max(0.1, deadline - time.monotonic()))
        while self.uploader is not None and self.uploader.backlog and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        if self.uploader is not None:
            await self.uploader.stop()
        if self.callbacks is not None:
            await self.callbacks.stop(drain_s=max(0.0, deadline - time.monotonic()))
        if self.store is not None:
            await asyncio.to_thread(self.store.close)
        log.info("node_stopped")

    def kill_workers(self) -> None:
        for worker in list(self.supervisor.workers):
            worker.stopping = True
            worker.process.kill()

    # talking to a stream's worker
    async def request(self, stream: PublishedStream, make: Callable[[int], protocol.Request]) -> protocol.Reply:
        worker = stream.worker
        if not isinstance(worker, WorkerHandle):
            raise WorkerGone("the stream has no worker")
        return await worker.request(make)

    # publishing
    def _admit(self, room_id: str, stream_id: str, pull: bool = False) -> None:
        if self.draining or not self.ready:
            busy = "node is draining or starting"
        else:
            limit = self.capacity.stream_refusal(len(self.rooms.all()) + len(self._publishing))
            busy = limit and f"node at capacity: {limit}"
        if busy:
            log.warning("publish_refused", room_id=room_id, stream_id=stream_id, reason=busy)
            raise errors.IngestError(503, busy, retry_after=RETRY_AFTER_S)
        if (room_id, stream_id) in self._publishing or self.rooms.get(room_id, stream_id) is not None:
            raise errors.IngestError(409, f"stream {stream_id!r} is already published in room {room_id!r}")
        if not pull and self.pulls.holds(room_id, stream_id):
            raise errors.IngestError(409, f"stream {stream_id!r} is pulled into room {room_id!r}")

    async def publish_whip(self, room_id: str, stream_id: str, user_id: str, user_name: str,
                           sdp_text: str) -> PublishedStream:
        """WHIP: the stream's worker answers the offer with its own peer connection."""
        self._admit(room_id, stream_id)
        key = (room_id, stream_id)
        self._publishing.add(key)
        try:
            stream = self.rooms.take_lingering(room_id, stream_id)
            if stream is None or not isinstance(stream.worker, WorkerHandle):
                stream = PublishedStream(StreamSpec(room_id, stream_id, user_id, ()), None, user_name, sdp_text,
                                         now_ms(), kind=InputKind.WHIP)
                await self._spawn_worker(stream, None)
                fresh = True
            else:
                fresh = False  # a FillBlank stream coming back: its worker continues the files
            worker = stream.worker
            assert isinstance(worker, WorkerHandle)
            try:
                reply = await worker.request(lambda rid: protocol.AcceptOffer(rid, sdp_text), timeout=WHIP_TIMEOUT_S)
            except (WorkerGone, TimeoutError):
                reply = protocol.Reply(0, False, protocol.OfferRefused(OfferRefusal.FAILED),
                                       "the stream's worker did not answer the offer")
            if not isinstance(reply.payload, protocol.OfferAnswer):
                if fresh:
                    await worker.stop()
                refusal = reply.payload.refusal if isinstance(reply.payload, protocol.OfferRefused) \
                    else OfferRefusal.FAILED
                raise errors.IngestError(int(refusal), f"offer not accepted: {reply.error}",
                                         retry_after=RETRY_AFTER_S if refusal is OfferRefusal.FAILED else None)
            answer, tracks = reply.payload.answer, reply.payload.tracks
            stream.spec = StreamSpec(room_id, stream_id, user_id, tracks)
            stream.user_name, stream.offer_text, stream.answer, stream.unpublished = user_name, sdp_text, answer, False
            if not fresh:
                stream.resource_id = secrets.token_urlsafe(12)
            self.rooms.add(stream)
        finally:
            self._publishing.discard(key)
        log.info("stream_published", room_id=room_id, stream_id=stream_id, user_id=user_id, kind=InputKind.WHIP,
                 worker_pid=worker.pid, tracks=[f"{t.kind}:{t.codec}" for t in tracks])
        assert self.tasks is not None
        await self.tasks.stream_ready(stream)
        return stream

    async def publish_rtp(self, room_id: str, stream_id: str, user_id: str, user_name: str,
                          sdp_text: str) -> PublishedStream:
        self._admit(room_id, stream_id)
        key = (room_id, stream_id)
        try:
            offer = parse_rtp_offer(sdp_text)
        except SdpError as error:
            raise errors.IngestError(400, f"bad SDP offer: {error}") from None
        self._publishing.add(key)
        try:
            spec = StreamSpec(room_id, stream_id, user_id, offer.tracks)
            stream = self.rooms.take_lingering(room_id, stream_id)
            if stream is not None and isinstance(stream.worker, WorkerHandle):
                await self._restart_input(stream, spec, offer, user_name, sdp_text)
            else:
                stream = PublishedStream(spec, offer, user_name, sdp_text, now_ms())
                await self._spawn_worker(stream, offer)
            stream.answer = rtp_answer(offer, self.config.advertised_address, stream.ports)
            self.rooms.add(stream)
            await self._store().save_stream(self._stream_record(stream))
        finally:
            self._publishing.discard(key)
        log.info("stream_published", room_id=room_id, stream_id=stream_id, user_id=user_id, ports=stream.ports,
                 worker_pid=stream.worker.pid)  # type: ignore[union-attr]
        assert self.tasks is not None
        await self.tasks.stream_ready(stream)
        return stream

    def _store(self) -> AsyncStore:
        assert self.store is not None
        return self.store

    @staticmethod
    def _stream_record(stream: PublishedStream) -> StreamRecord:
        return StreamRecord(stream.resource_id, stream.room_id, stream.stream_id, stream.spec.user_id,
                            stream.user_name, stream.offer_text, stream.ports, stream.published_ms)

    async def _restore_streams(self) -> None:
        """After a restart: listen again on the ports of every RTP stream that was
        published, so its publisher (which knows nothing of the restart) is recorded."""
        for record in await self._store().streams():
            try:
                offer = parse_rtp_offer(record.offer)
                spec = StreamSpec(record.room_id, record.stream_id, record.user_id, offer.tracks)
                stream = PublishedStream(spec, offer, record.user_name, record.offer, record.published_ms,
                                         resource_id=record.resource_id, ports=record.ports)
                self.ports.reserve(record.ports)
                await self._spawn_worker(stream, None)
            except (SdpError, errors.IngestError) as error:
                log.warning("stream_not_restored", room_id=record.room_id, stream_id=record.stream_id,
                            error=str(error))
                self.ports.release(record.ports)
                await self._store().delete_stream(record.resource_id)
                continue
            stream.answer = rtp_answer(offer, self.config.advertised_address, stream.ports)
            self.rooms.add(stream)
            log.info("stream_restored", room_id=record.room_id, stream_id=record.stream_id, ports=record.ports)
            assert self.tasks is not None
            await self.tasks.stream_ready(stream)

    def _worker_config(self, stream: PublishedStream) -> WorkerConfig:
        return WorkerConfig(stream=stream.spec, bind_host=self.config.rtp_bind_host, rtp_ports=stream.ports,
                            tuning=MediaTuning(jitter_max_wait_s=self.config.jitter_max_wait_s,
                                               sync_wait_for_sr_s=self.config.sync_wait_for_sr_s),
                            inactivity_timeout_s=self.config.rtp_inactivity_timeout_s,
                            log_level=self.config.log_level, input_kind=stream.kind,
                            webrtc_hosts=self.config.webrtc_hosts,
                            webrtc_advertised=self.config.advertised_address
                            if self.config.advertised_address not in self.config.webrtc_hosts else None,
                            webrtc_ports=self.config.webrtc_ports, fast_consent=self.config.test_limits)

    async def _restart_input(self, stream: PublishedStream, spec: StreamSpec, offer: RtpOffer,
                             user_name: str, sdp_text: str) -> None:
        """A departed stream whose recordings were kept open is published again:
        its worker receives the new session and continues those files."""
        worker = stream.worker
        assert isinstance(worker, WorkerHandle)
        for _ in range(SPAWN_ATTEMPTS):
            try:
                ports = self.ports.allocate(len(offer.tracks))
            except PortsExhausted:
                raise errors.IngestError(503, "no free RTP ports", retry_after=RETRY_AFTER_S) from None
            reply = await worker.request(lambda rid: protocol.StartInput(rid, spec, ports))
            if reply.ok:
                stream.spec, stream.offer, stream.user_name, stream.ports = spec, offer, user_name, ports
                stream.offer_text = sdp_text
                stream.resource_id = secrets.token_urlsafe(12)
                stream.unpublished = False
                log.info("stream_resumed", room_id=spec.room_id, stream_id=spec.stream_id, worker_pid=worker.pid)
                return
            # ports another program holds stay marked as used
        await worker.stop()
        raise errors.IngestError(503, "could not restart the stream's input", retry_after=RETRY_AFTER_S)

    async def _spawn_worker(self, stream: PublishedStream, offer: RtpOffer | None) -> None:
        """Start the stream's worker; with an offer, on fresh ports (retrying taken ones)."""
        last_error: Exception | None = None
        for _ in range(SPAWN_ATTEMPTS):
            if offer is not None:
                try:
                    stream.ports = self.ports.allocate(len(offer.tracks))
                except PortsExhausted:
                    raise errors.IngestError(503, "no free RTP ports", retry_after=RETRY_AFTER_S) from None
            try:
                stream.worker = await self.supervisor.spawn(
                    self._worker_config(stream), self._event_handler(stream), self._exit_handler(stream))
                return
            except WorkerStartError as error:
                last_error = error
                log.warning("worker_start_failed", room_id=stream.room_id, stream_id=stream.stream_id,
                            reason=str(error))
                if offer is None:
                    break
                # Ports some other program holds stay marked as used; the rest go back.
                self.ports.release(tuple(p for p in stream.ports if p not in error.ports_in_use))
        raise errors.IngestError(503, f"could not start a worker: {last_error}", retry_after=RETRY_AFTER_S)

    # pulled streams (engine.pulls): their worker is started here, they connect when asked
    async def spawn_pull_worker(self, stream: PublishedStream, pull: PullSpec) -> None:
        try:
            stream.worker = await self.supervisor.spawn(replace(self._worker_config(stream), pull=pull),
                                                        self._event_handler(stream), self._exit_handler(stream))
        except WorkerStartError as error:
            raise errors.IngestError(503, f"could not start a worker: {error}") from None

    async def unpublish(self, resource_id: str, reason: str = "deleted") -> None:
        stream = self.rooms.by_resource(resource_id)
        if stream is None:
            raise errors.IngestError(404, "no such stream resource")
        stream.unpublished = True
        self.rooms.remove(stream)
        if not self.draining or stream.kind is not InputKind.RTP:  # a node going down keeps its RTP streams
            await self._store().delete_stream(resource_id)
        assert self.tasks is not None
        keep, stop = self.tasks.stream_gone(stream)
        worker = stream.worker
        if keep and isinstance(worker, WorkerHandle) and not self.draining:
            # FillBlank: the files stay open in the worker until the stream comes back.
            await asyncio.gather(*(worker.request(lambda rid, t=t: protocol.StopRecording(rid, t)) for t in stop),
                                 return_exceptions=True)
            await worker.request(protocol.StopInput)
            self.rooms.linger(stream)
        elif isinstance(worker, WorkerHandle):
            await worker.stop()
        self.ports.release(stream.ports)
        log.info("stream_unpublished", room_id=stream.room_id, stream_id=stream.stream_id, reason=reason,
                 kept_open_for=keep)
        self.pulls.stream_left(stream, reason)

    async def stream_stats(self, resource_id: str) -> dict[str, Any]:
        stream = self.rooms.by_resource(resource_id)
        if stream is None:
            raise errors.IngestError(404, "no such stream resource")
        reply = await self.request(stream, protocol.GetStats)
        stats = reply.payload if isinstance(reply.payload, protocol.StreamStats) else protocol.StreamStats()
        worker = stream.worker
        return {
            "RoomId": stream.room_id, "StreamId": stream.stream_id, "UserId": stream.spec.user_id,
            "WorkerPid": worker.pid if isinstance(worker, WorkerHandle) else None,
            "Ports": list(stream.ports), "Tracks": stats.tracks, "Recordings": list(stats.recordings),
        }

    async def flush(self, stream: PublishedStream) -> None:
        """Wait until every event the stream's worker sent so far has been handled."""
        worker = stream.worker
        queue = self._queues.get(id(worker)) if isinstance(worker, WorkerHandle) else None
        if queue is None:
            return
        future = asyncio.get_running_loop().create_future()
        queue.put_nowait(_Flush(future))
        await future

    # worker events, in order per worker
    def _queue_for(self, handle: WorkerHandle, stream: PublishedStream) -> asyncio.Queue:
        queue = self._queues.get(id(handle))
        if queue is None:
            queue = self._queues[id(handle)] = asyncio.Queue()
            consumer = asyncio.get_running_loop().create_task(self._consume(handle, stream, queue))
            self._consumers.add(consumer)
            consumer.add_done_callback(self._consumers.discard)
        return queue

    def _event_handler(self, stream: PublishedStream):
        def on_event(handle: WorkerHandle, event: Any) -> None:
            self._queue_for(handle, stream).put_nowait(event)

        return on_event

    def _exit_handler(self, stream: PublishedStream):
        def on_exit(handle: WorkerHandle, code: int | None) -> None:
            self._queue_for(handle, stream).put_nowait(_WorkerExited(handle, code))

        return on_exit

    async def _consume(self, handle: WorkerHandle, stream: PublishedStream, queue: asyncio.Queue) -> None:
        assert self.tasks is not None
        while True:
            item = await queue.get()
            try:
                if isinstance(item, _Flush):
                    item.future.set_result(None)
                    continue
                if isinstance(item, _WorkerExited):
                    await self._on_worker_exit(stream, item)
                    return
                if isinstance(item, protocol.StreamInactive):
                    if not stream.unpublished:
                        # Not awaited: unpublishing waits for this queue (the worker's last events).
                        self._background(self.unpublish(stream.resource_id, reason=f"inactive: {item.reason}"))
                    continue
                await self.tasks.on_event(stream, item)
            except Exception:
                log.exception("worker_event_failed", room_id=stream.room_id, stream_id=stream.stream_id)
            finally:
                if isinstance(item, _WorkerExited):
                    self._queues.pop(id(handle), None)
                    while not queue.empty():
                        leftover = queue.get_nowait()
                        if isinstance(leftover, _Flush):
                            leftover.future.set_result(None)

    def _background(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._consumers.add(task)
        task.add_done_callback(self._consumers.discard)

    async def _on_worker_exit(self, stream: PublishedStream, exited: _WorkerExited) -> None:
        assert self.tasks is not None
        if exited.handle.stopping or stream.worker is not exited.handle:
            return
        log.error("worker_died", room_id=stream.room_id, stream_id=stream.stream_id, pid=exited.handle.pid,
                  exitcode=exited.code)
        await self.tasks.worker_lost(stream)
        stream.worker = None
        self.rooms.take_lingering(stream.room_id, stream.stream_id)
        if stream.unpublished or self.draining:
            return
        if stream.kind is not InputKind.RTP:  # the connection died with it: the publisher (or pull) reconnects
            await self.unpublish(stream.resource_id, reason="worker died")
            return
        now = time.monotonic()
        while stream.restarts and now - stream.restarts[0] > 60:
            stream.restarts.popleft()
        if len(stream.restarts) >= defaults.WORKER_MAX_RESTARTS_PER_MINUTE:
            log.error("worker_restart_limit", room_id=stream.room_id, stream_id=stream.stream_id)
            await self.unpublish(stream.resource_id)
            return
        stream.restarts.append(now)
        try:
            await self._spawn_worker(stream, None)  # same ports: an RTP publisher keeps sending there
        except errors.IngestError:
            log.error("worker_restart_failed", room_id=stream.room_id, stream_id=stream.stream_id)
            await self.unpublish(stream.resource_id)
            return
        log.info("worker_restarted", room_id=stream.room_id, stream_id=stream.stream_id,
                 pid=stream.worker.pid)  # type: ignore[union-attr]
        await self.tasks.stream_ready(stream)
