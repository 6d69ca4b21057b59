"""Published streams: publishing (plain RTP and WHIP), unpublishing, their workers
and the restarts of those, and the streams a restarted node listens for again.

Every published stream has one worker process. What a worker says is routed here
(`_route`): its exit and its input going quiet are the registry's business,
everything else goes to the task manager.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import replace
from typing import Any, Protocol

import structlog

from contract import protocol
from contract.codes import InputKind, OfferRefusal
from contract.tuning import MediaTuning
from contract.worker import PullSpec, StreamSpec, WorkerConfig
from engine import defaults, errors, metrics
from engine.admission import RETRY_AFTER_S, Admission
from engine.clock import SYSTEM_CLOCK, Clock
from engine.config import NodeConfig
from engine.events import OnEvent, OnExit, WorkerEvents, WorkerExited, WorkerMessage
from engine.ports import PortAllocator, PortsExhausted
from engine.rooms import PublishedStream, Rooms, StreamWorker
from engine.sdp import RtpOffer, SdpError, UnsupportedMedia, parse_rtp_offer, rtp_answer
from engine.store import AsyncStore, Conflict, StreamRecord
from engine.supervisor import WorkerGone, WorkerStartError
from engine.tasks import TaskManager

log = structlog.get_logger("streams")

SPAWN_ATTEMPTS = 3
WHIP_TIMEOUT_S = 15.0  # offer -> answer, ICE gathering included
RESTART_WINDOW_S = 60.0  # defaults.WORKER_MAX_RESTARTS_PER_MINUTE counts restarts in this window


class Spawner(Protocol):
    """Starts workers: engine.supervisor.Supervisor (processes), or the unit tests' fake."""

    workers: set[Any]

    async def warm_up(self) -> None: ...

    async def spawn(self, config: WorkerConfig, on_event: OnEvent, on_exit: OnExit) -> StreamWorker:
        """A worker that answered Ready; raises WorkerStartError."""

    async def stop_all(self) -> None: ...

    def kill_all(self) -> None: ...


class PullHooks(Protocol):
    """What the registry asks of the node's pull sources (engine.pulls.PullSources)."""

    def holds(self, room_id: str, stream_id: str) -> bool:
        """Whether a pull source owns this stream id: nobody may push it."""

    def stream_left(self, stream: PublishedStream, reason: str) -> None: ...


class _NoPulls:
    def holds(self, room_id: str, stream_id: str) -> bool:
        return False

    def stream_left(self, stream: PublishedStream, reason: str) -> None:
        pass


class StreamRegistry:
    def __init__(self, config: NodeConfig, store: AsyncStore, rooms: Rooms, ports: PortAllocator,
                 spawner: Spawner, admission: Admission, events: WorkerEvents, tasks: TaskManager,
                 clock: Clock = SYSTEM_CLOCK):
        self._config = config
        self._store = store
        self._rooms = rooms
        self._ports = ports
        self._spawner = spawner
        self._admission = admission
        self._events = events
        self._tasks = tasks
        self._clock = clock
        self._publishing: set[tuple[str, str]] = set()  # admitted, not yet in a room
        self.pulls: PullHooks = _NoPulls()  # the node's pull sources, once built

    @property
    def rooms(self) -> Rooms:
        return self._rooms

    @property
    def count(self) -> int:
        return len(self._rooms.all())

    @property
    def load(self) -> int:
        """Streams published or being published now: what admission counts."""
        return self.count + len(self._publishing)

    def published(self) -> list[PublishedStream]:
        return self._rooms.all()

    # publishing
    def admit(self, room_id: str, stream_id: str, pull: bool = False) -> None:
        """Whether this stream may be published now (a pull source's own stream: `pull`)."""
        self._admission.admit_stream(self.load, room_id, stream_id)
        if (room_id, stream_id) in self._publishing or self._rooms.get(room_id, stream_id) is not None:
            raise errors.IngestError(409, f"stream {stream_id!r} is already published in room {room_id!r}")
        if not pull and self.pulls.holds(room_id, stream_id):
            raise errors.IngestError(409, f"stream {stream_id!r} is pulled into room {room_id!r}")

    async def publish_whip(self, room_id: str, stream_id: str, user_id: str, user_name: str,
                           sdp_text: str) -> PublishedStream:
        """WHIP: the stream's worker answers the offer with its own peer connection."""
        self.admit(room_id, stream_id)
        key = (room_id, stream_id)
        self._publishing.add(key)
        try:
            lingering = self._rooms.take_lingering(room_id, stream_id)
            if lingering is not None and lingering.worker is not None:
                # a FillBlank stream coming back: its worker continues the files
                stream, worker, fresh = lingering, lingering.worker, False
            else:
                stream = PublishedStream(StreamSpec(room_id, stream_id, user_id, ()), None, user_name, sdp_text,
                                         self._clock.wall_ms(), kind=InputKind.WHIP)
                worker, fresh = await self._spawn_worker(stream, None), True
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
                if refusal is OfferRefusal.UNSUPPORTED:
                    await self._tasks.stream_unsupported(room_id, stream_id, reply.error)
                raise errors.IngestError(int(refusal), f"offer not accepted: {reply.error}",
                                         retry_after=RETRY_AFTER_S if refusal is OfferRefusal.FAILED else None)
            answer, tracks = reply.payload.answer, reply.payload.tracks
            stream.spec = StreamSpec(room_id, stream_id, user_id, tracks)
            stream.user_name, stream.offer_text, stream.answer, stream.unpublished = user_name, sdp_text, answer, False
            if not fresh:
                stream.resource_id = secrets.token_urlsafe(12)
            self._rooms.add(stream)
            self._publishing.discard(key)  # counted once: it is in its room now
            await self._record_in_store(stream)
        finally:
            self._publishing.discard(key)
        log.info("stream_published", room_id=room_id, stream_id=stream_id, user_id=user_id, kind=InputKind.WHIP,
                 worker_pid=worker.pid, tracks=[f"{t.kind}:{t.codec}" for t in tracks])
        await self._tasks.stream_ready(stream)
        return stream

    async def publish_rtp(self, room_id: str, stream_id: str, user_id: str, user_name: str,
                          sdp_text: str, announcer: str = "") -> PublishedStream:
        self.admit(room_id, stream_id)
        key = (room_id, stream_id)
        try:
            offer = self._parse_offer(sdp_text, announcer)
        except SdpError as error:
            if isinstance(error, UnsupportedMedia):
                await self._tasks.stream_unsupported(room_id, stream_id, str(error))
            raise errors.IngestError(400, f"bad SDP offer: {error}") from None
        self._publishing.add(key)
        try:
            spec = StreamSpec(room_id, stream_id, user_id, offer.tracks)
            stream = self._rooms.take_lingering(room_id, stream_id)
            if stream is not None and stream.worker is not None:
                worker = await self._restart_input(stream, stream.worker, spec, offer, user_name, sdp_text)
            else:
                stream = PublishedStream(spec, offer, user_name, sdp_text, self._clock.wall_ms())
                worker = await self._spawn_worker(stream, offer)
            stream.answer = rtp_answer(offer, self._config.advertised_address, stream.ports)
            self._rooms.add(stream)
            self._publishing.discard(key)  # counted once: it is in its room now
            await self._record_in_store(stream)
        finally:
            self._publishing.discard(key)
        log.info("stream_published", room_id=room_id, stream_id=stream_id, user_id=user_id, ports=stream.ports,
                 worker_pid=worker.pid)
        await self._tasks.stream_ready(stream)
        return stream

    async def _record_in_store(self, stream: PublishedStream) -> None:
        """The fleet's registry of streams: one publisher per stream id on the live nodes
        (a dead node's is taken over). Refused with 409 when a live node has it."""
        try:
            await self._store.save_stream(self._stream_record(stream), self._clock.wall_ms())
        except Conflict:
            await self.unpublish(stream.resource_id, reason="published_on_another_node")
            raise errors.IngestError(409, f"stream {stream.stream_id!r} is already published in room "
                                          f"{stream.room_id!r} on another node") from None

    def _parse_offer(self, sdp_text: str, announcer: str) -> RtpOffer:
        """`announcer`: the host that announced the stream, its only source with --rtp-pin-source.
        The node's SRTP answer keys are derived from its server secret (`engine.sdes`)."""
        return parse_rtp_offer(sdp_text, answer_key_secret=self._config.server_secret.encode(),
                               require_srtp=self._config.rtp_require_srtp,
                               source_host=(announcer or None) if self._config.rtp_pin_source else None)

    @staticmethod
    def _stream_record(stream: PublishedStream) -> StreamRecord:
        return StreamRecord(stream.resource_id, stream.room_id, stream.stream_id, stream.spec.user_id,
                            stream.user_name, stream.offer_text, stream.ports, stream.published_ms,
                            next((t.source_host for t in stream.spec.tracks if t.source_host), ""), str(stream.kind))

    async def restore(self) -> None:
        """After a restart: listen again on the ports of every RTP stream that was
        published, so its publisher (which knows nothing of the restart) is recorded."""
        for record in await self._store.streams():
            if record.kind != InputKind.RTP:  # its peer connection died with the node: its publisher reconnects
                await self._store.delete_stream(record.resource_id)
                continue
            try:
                offer = self._parse_offer(record.offer, record.source_host)
                spec = StreamSpec(record.room_id, record.stream_id, record.user_id, offer.tracks)
                stream = PublishedStream(spec, offer, record.user_name, record.offer, record.published_ms,
                                         resource_id=record.resource_id, ports=record.ports)
                self._ports.reserve(record.ports)
                await self._spawn_worker(stream, None)
            except (SdpError, errors.IngestError) as error:
                log.warning("stream_not_restored", room_id=record.room_id, stream_id=record.stream_id,
                            error=str(error))
                self._ports.release(record.ports)
                await self._store.delete_stream(record.resource_id)
                continue
            stream.answer = rtp_answer(offer, self._config.advertised_address, stream.ports)
            self._rooms.add(stream)
            log.info("stream_restored", room_id=record.room_id, stream_id=record.stream_id, ports=record.ports)
            await self._tasks.stream_ready(stream)

    def _worker_config(self, stream: PublishedStream) -> WorkerConfig:
        return WorkerConfig(stream=stream.spec, bind_host=self._config.rtp_bind_host, rtp_ports=stream.ports,
                            tuning=MediaTuning(jitter_max_wait_s=self._config.jitter_max_wait_s,
                                               sync_wait_for_sr_s=self._config.sync_wait_for_sr_s),
                            inactivity_timeout_s=self._config.rtp_inactivity_timeout_s,
                            log_level=self._config.log_level, input_kind=stream.kind,
                            webrtc_hosts=self._config.webrtc_hosts,
                            webrtc_advertised=self._config.advertised_address
                            if self._config.advertised_address not in self._config.webrtc_hosts else None,
                            webrtc_ports=self._config.webrtc_ports, fast_consent=self._config.test_limits)

    async def _restart_input(self, stream: PublishedStream, worker: StreamWorker, spec: StreamSpec,
                             offer: RtpOffer, user_name: str, sdp_text: str) -> StreamWorker:
        """A departed stream whose recordings were kept open is published again:
        its worker receives the new session and continues those files."""
        for _ in range(SPAWN_ATTEMPTS):
            try:
                ports = self._ports.allocate(len(offer.tracks))
            except PortsExhausted:
                raise errors.IngestError(503, "no free RTP ports", retry_after=RETRY_AFTER_S) from None
            reply = await worker.request(lambda rid: protocol.StartInput(rid, spec, ports))
            if reply.ok:
                stream.spec, stream.offer, stream.user_name, stream.ports = spec, offer, user_name, ports
                stream.offer_text = sdp_text
                stream.resource_id = secrets.token_urlsafe(12)
                stream.unpublished = False
                log.info("stream_resumed", room_id=spec.room_id, stream_id=spec.stream_id, worker_pid=worker.pid)
                return worker
            # ports another program holds stay marked as used
        await worker.stop()
        raise errors.IngestError(503, "could not restart the stream's input", retry_after=RETRY_AFTER_S)

    async def _spawn_worker(self, stream: PublishedStream, offer: RtpOffer | None) -> StreamWorker:
        """Start the stream's worker; with an offer, on fresh ports (retrying taken ones)."""
        last_error: Exception | None = None
        for _ in range(SPAWN_ATTEMPTS):
            if offer is not None:
                try:
                    stream.ports = self._ports.allocate(len(offer.tracks))
                except PortsExhausted:
                    raise errors.IngestError(503, "no free RTP ports", retry_after=RETRY_AFTER_S) from None
            try:
                on_event, on_exit = self._events.listen(stream, self._route)
                worker = await self._spawner.spawn(self._worker_config(stream), on_event, on_exit)
            except WorkerStartError as error:
                metrics.WORKER_START_FAILURES.inc()
                last_error = error
                log.warning("worker_start_failed", room_id=stream.room_id, stream_id=stream.stream_id,
                            reason=str(error))
                if offer is None:
                    break
                # Ports some other program holds stay marked as used; the rest go back.
                self._ports.release(tuple(p for p in stream.ports if p not in error.ports_in_use))
                continue
            metrics.WORKER_STARTS.inc()
            stream.worker = worker
            return worker
        raise errors.IngestError(503, f"could not start a worker: {last_error}", retry_after=RETRY_AFTER_S)

    # pulled streams (engine.pulls): their worker is started here; they connect when asked
    async def spawn_pull_worker(self, stream: PublishedStream, pull: PullSpec) -> None:
        on_event, on_exit = self._events.listen(stream, self._route)
        try:
            stream.worker = await self._spawner.spawn(replace(self._worker_config(stream), pull=pull),
                                                      on_event, on_exit)
        except WorkerStartError as error:
            raise errors.IngestError(503, f"could not start a worker: {error}") from None

    async def request(self, stream: PublishedStream, make) -> protocol.Reply:
        return await self._events.request(stream, make)

    async def stream_ready(self, stream: PublishedStream) -> None:
        """A stream joined its room: the tasks recording the room start on it."""
        await self._tasks.stream_ready(stream)

    # unpublishing
    async def unpublish(self, resource_id: str, reason: str = "deleted") -> None:
        stream = self._rooms.by_resource(resource_id)
        if stream is None:
            raise errors.IngestError(404, "no such stream resource")
        stream.unpublished = True
        self._rooms.remove(stream)
        draining = self._admission.draining
        if not draining or stream.kind is not InputKind.RTP:  # a node going down keeps its RTP streams
            await self._store.delete_stream(resource_id)
        keep, stop = self._tasks.stream_gone(stream)
        worker = stream.worker
        if keep and worker is not None and not draining:
            # FillBlank: the files stay open in the worker until the stream comes back.
            await asyncio.gather(*(worker.request(lambda rid, t=t: protocol.StopRecording(rid, t)) for t in stop),
                                 return_exceptions=True)
            await worker.request(protocol.StopInput)
            self._rooms.linger(stream)
        elif worker is not None:
            await worker.stop()
        self._ports.release(stream.ports)
        log.info("stream_unpublished", room_id=stream.room_id, stream_id=stream.stream_id, reason=reason,
                 kept_open_for=keep)
        self.pulls.stream_left(stream, reason)

    async def unpublish_all(self) -> None:
        await asyncio.gather(*(self.unpublish(s.resource_id) for s in self._rooms.all()), return_exceptions=True)

    async def close_lingering(self) -> None:
        """On the ticker: a departed stream whose recordings no task keeps open any more
        lets its worker go."""
        for stream in self._rooms.lingering():
            if not self._tasks.keeps_open(stream.room_id, stream.stream_id):
                self._rooms.take_lingering(stream.room_id, stream.stream_id)
                if stream.worker is not None:
                    await stream.worker.stop()

    async def stats(self, resource_id: str) -> dict[str, Any]:
        stream = self._rooms.by_resource(resource_id)
        if stream is None:
            raise errors.IngestError(404, "no such stream resource")
        reply = await self._events.request(stream, protocol.GetStats)
        stats = reply.payload if isinstance(reply.payload, protocol.StreamStats) else protocol.StreamStats()
        return {
            "RoomId": stream.room_id, "StreamId": stream.stream_id, "UserId": stream.spec.user_id,
            "WorkerPid": stream.worker.pid if stream.worker is not None else None,
            "Ports": list(stream.ports), "Tracks": stats.tracks, "Recordings": list(stats.recordings),
        }

    # what the workers say
    async def _route(self, stream: PublishedStream, message: WorkerMessage) -> None:
        match message:
            case WorkerExited():
                await self._worker_exited(stream, message)
            case protocol.StreamInactive():
                if not stream.unpublished:
                    # Not awaited: unpublishing waits for this queue (the worker's last events).
                    self._events.background(self.unpublish(stream.resource_id, reason=f"inactive: {message.reason}"))
            case _:
                await self._tasks.on_event(stream, message)

    async def _worker_exited(self, stream: PublishedStream, exited: WorkerExited) -> None:
        """A worker that was not asked to stop died: what it wrote is kept, and a stream
        still published gets a new one (at most WORKER_MAX_RESTARTS_PER_MINUTE)."""
        if exited.worker.stopping or stream.worker is not exited.worker:
            return
        metrics.WORKER_DEATHS.inc()
        log.error("worker_died", room_id=stream.room_id, stream_id=stream.stream_id, pid=exited.worker.pid,
                  exitcode=exited.code)
        await self._tasks.worker_lost(stream)
        stream.worker = None
        self._rooms.take_lingering(stream.room_id, stream.stream_id)
        if stream.unpublished or self._admission.draining:
            return
        if stream.kind is not InputKind.RTP:  # the connection died with it: the publisher (or pull) reconnects
            await self.unpublish(stream.resource_id, reason="worker died")
            return
        now = self._clock.monotonic()
        while stream.restarts and now - stream.restarts[0] > RESTART_WINDOW_S:
            stream.restarts.popleft()
        if len(stream.restarts) >= defaults.WORKER_MAX_RESTARTS_PER_MINUTE:
            log.error("worker_restart_limit", room_id=stream.room_id, stream_id=stream.stream_id)
            await self.unpublish(stream.resource_id)
            return
        stream.restarts.append(now)
        try:
            worker = await self._spawn_worker(stream, None)  # same ports: an RTP publisher keeps sending there
        except errors.IngestError:
            log.error("worker_restart_failed", room_id=stream.room_id, stream_id=stream.stream_id)
            await self.unpublish(stream.resource_id)
            return
        metrics.WORKER_RESTARTS.inc()
        log.info("worker_restarted", room_id=stream.room_id, stream_id=stream.stream_id, pid=worker.pid)
        await self._tasks.stream_ready(stream)
