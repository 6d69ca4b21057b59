"""Pulled streams: the node subscribes to a WHEP server or an RTSP camera, and what it
receives is a stream of the room like a published one (`POST /pull/{RoomId}/{StreamId}`,
routes in `engine.pull_api`).

Each source has a runner. It connects: a worker is started for the stream (or the one a
FillBlank task kept for it is reused); WHEP: the worker makes the offer, the node POSTs
it to the server (`engine.whep_client`) and hands the answer back; RTSP: the worker
connects itself. Then the stream joins its room and StartRecord tasks record it. When the
stream leaves the room (the worker reports it gone: connection closed or failed, RTCP
BYE, the camera closed or stalled, no media for --rtp-timeout; or its worker died) the
WHEP session is DELETEd and the runner tries again after a backoff (1 s, doubling, at most
30 s; back to 1 s once live). While it is down its stream is not in the room, so the
room's idle clock runs; when it comes back it joins like a republish (FillBlank applies).

The URL and token are secrets like storage keys: they stay in `PullRequest` (never in
repr), never in a log line or a status answer; error messages name what failed, not where.
Every address the node sends to (the source, a WHEP redirect target, the WHEP resource) must
pass `check_outbound`, today the CallbackUrl policy (`engine.checks`).
"""

from __future__ import annotations

import asyncio
import enum
import secrets
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog

from contract import protocol
from contract.codes import InputKind
from contract.worker import PullSpec, StreamSpec, TrackSpec
from engine import checks, defaults, egress, errors, whep_client
from engine.clock import SYSTEM_CLOCK
from engine.config import NodeConfig
from engine.models import Fields
from engine.rooms import PublishedStream, StreamWorker
from engine.supervisor import WorkerGone

if TYPE_CHECKING:
    from engine.streams import StreamRegistry

log = structlog.get_logger("pulls")

URL_SCHEMES = {InputKind.WHEP: ("http", "https"), InputKind.RTSP: ("rtsp", "rtsps")}
TRANSPORTS = ("tcp", "udp")
WORKER_REQUEST_S = 15.0  # a worker's offer (ICE gathering included)
MAX_URL_BYTES = 2048


class PullState(enum.StrEnum):
    CONNECTING = "connecting"  # the first attempt is under way
    LIVE = "live"  # the stream is in its room
    RETRYING = "retrying"  # it failed or dropped: waiting for, or making, the next attempt
    STOPPED = "stopped"  # deleted


class PullFailed(Exception):
    """An attempt failed; the message is safe to show (no URL, no token)."""


@dataclass(frozen=True)
class PullRequest:
    room_id: str
    stream_id: str
    user_id: str
    kind: InputKind
    url: str = field(repr=False)
    bearer_token: str = field(default="", repr=False)
    transport: str = "tcp"


def parse_pull(room_id: str, stream_id: str, user_id: str, body: Any) -> PullRequest:
    """The JSON body of POST /pull/...: {"Url", "Kind": "whep" | "rtsp", "BearerToken" (WHEP),
    "Transport": "tcp" | "udp" (RTSP)}. InvalidParameter names the field."""
    fields = Fields(body)
    kind_name = fields.string("Kind")
    if kind_name not in ("whep", "rtsp"):
        raise errors.InvalidParameter("Kind must be whep or rtsp")
    kind = InputKind(kind_name)
    url = fields.string("Url", max_len=MAX_URL_BYTES, allow_empty=False)
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise errors.InvalidParameter("Url is not a valid URL") from None
    if parts.scheme.lower() not in URL_SCHEMES[kind]:
        raise errors.InvalidParameter(f"Url must be a {' or '.join(URL_SCHEMES[kind])} URL for Kind {kind_name}")
    try:
        host = parts.hostname
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        raise errors.InvalidParameter("Url has an invalid host or port") from None
    if not host:
        raise errors.InvalidParameter("Url has no host")
    token = fields.string("BearerToken", "", max_len=4096)
    if token and kind is not InputKind.WHEP:
        raise errors.InvalidParameter("BearerToken is for Kind whep (an RTSP Url carries its own credentials)")
    transport = fields.string("Transport", "tcp" if kind is InputKind.RTSP else "")
    if kind is InputKind.RTSP and transport not in TRANSPORTS:
        raise errors.InvalidParameter("Transport must be tcp or udp")
    if kind is InputKind.WHEP and transport:
        raise errors.InvalidParameter("Transport is for Kind rtsp")
    return PullRequest(room_id, stream_id, user_id, kind, url, token, transport or "tcp")


async def check_outbound(config: NodeConfig, url: str, field_name: str = "Url") -> None:
    """The node's policy for the addresses it sends to (today CallbackUrl's deny networks,
    `engine.checks`): InvalidParameter naming `field_name`, never the address."""
    try:
        await checks.check_callback_url(config, url)
    except errors.InvalidParameter:
        raise errors.InvalidParameter(f"{field_name} points into a network this node refuses") from None


@dataclass(eq=False)
class PullSource:
    request: PullRequest
    source_id: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    state: PullState = PullState.CONNECTING
    created_ms: int = field(default_factory=SYSTEM_CLOCK.wall_ms)
    attempts: int = 0
    connects: int = 0
    drops: int = 0
    last_error: str = ""
    last_error_ms: int | None = None
    live_since_ms: int | None = None
    next_attempt_at: float | None = None  # monotonic
    stopped_at: float | None = None  # monotonic
    tracks: tuple[TrackSpec, ...] = ()
    ignored: tuple[str, ...] = ()
    stream: PublishedStream | None = None  # in the room while live; may linger (FillBlank)
    whep_resource: str | None = field(default=None, repr=False)
    runner: asyncio.Task | None = None
    left: asyncio.Event = field(default_factory=asyncio.Event)  # the live session's stream left the room
    left_reason: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return self.request.room_id, self.request.stream_id

    def failed(self, reason: str) -> None:
        self.last_error, self.last_error_ms = reason, SYSTEM_CLOCK.wall_ms()
        self.state = PullState.RETRYING
        self.live_since_ms = None

    def view(self, stats: dict[str, Any] | None = None) -> dict[str, Any]:
        """The status answer: state and counters, never the URL or the token."""
        wait = None
        if self.state is PullState.RETRYING and self.next_attempt_at is not None:
            wait = round(max(0.0, self.next_attempt_at - time.monotonic()), 1)
        answer = {
            "SourceId": self.source_id, "RoomId": self.request.room_id, "StreamId": self.request.stream_id,
            "UserId": self.request.user_id, "Kind": self.request.kind.value, "State": self.state.value,
            "LastError": self.last_error, "LastErrorTime": self.last_error_ms, "Attempts": self.attempts,
            "Connects": self.connects, "Drops": self.drops, "LiveSince": self.live_since_ms,
            "NextAttemptIn": wait, "CreateTime": self.created_ms,
            "Tracks": [{"Kind": t.kind.value, "Codec": t.codec, "ClockRate": t.clock_rate} for t in self.tracks]
            if self.state is PullState.LIVE else [],
            "Ignored": list(self.ignored) if self.state is PullState.LIVE else [],
        }
        if self.request.kind is InputKind.RTSP:
            answer["Transport"] = self.request.transport
        if stats is not None:
            answer["Stats"] = stats
        return answer


class PullSources:
    """Every pull source of the node, and their runners."""

    def __init__(self, config: NodeConfig, streams: StreamRegistry):
        self._config = config
        self._streams = streams
        self._policy = egress.callback_policy(config.callback_deny)
        self._sources: dict[str, PullSource] = {}
        self._active: dict[tuple[str, str], PullSource] = {}
        self._http: aiohttp.ClientSession | None = None

    def holds(self, room_id: str, stream_id: str) -> bool:
        """Whether a (not deleted) pull source owns this stream id: nobody may publish it."""
        return (room_id, stream_id) in self._active

    def get(self, source_id: str) -> PullSource:
        now = time.monotonic()
        for old in [s for s in self._sources.values()
                    if s.stopped_at is not None and now - s.stopped_at > defaults.PULL_STOPPED_KEEP_S]:
            del self._sources[old.source_id]
        source = self._sources.get(source_id)
        if source is None:
            raise errors.IngestError(404, "no such pull source")
        return source

    async def create(self, request: PullRequest) -> PullSource:
        if self.holds(request.room_id, request.stream_id):
            raise errors.IngestError(409, f"stream {request.stream_id!r} is already pulled into room "
                                          f"{request.room_id!r}")
        self._streams.admit(request.room_id, request.stream_id, pull=True)
        await check_outbound(self._config, request.url)
        if self.holds(request.room_id, request.stream_id):  # another POST got there while we checked
            raise errors.IngestError(409, f"stream {request.stream_id!r} is already pulled")
        source = PullSource(request)
        self._sources[source.source_id] = self._active[source.key] = source
        source.runner = asyncio.get_running_loop().create_task(self._run(source))
        log.info("pull_created", source_id=source.source_id, room_id=request.room_id, stream_id=request.stream_id,
                 kind=request.kind)
        return source

    async def stats(self, source: PullSource) -> dict[str, Any] | None:
        stream = source.stream
        if source.state is not PullState.LIVE or stream is None:
            return None
        try:
            reply = await self._streams.request(stream, protocol.GetStats)
        except (WorkerGone, TimeoutError):
            return None
        return reply.payload.tracks if isinstance(reply.payload, protocol.StreamStats) else None

    async def delete(self, source_id: str) -> PullSource:
        source = self.get(source_id)
        if source.state is PullState.STOPPED:
            return source
        await self._stop(source)
        log.info("pull_deleted", source_id=source.source_id, room_id=source.request.room_id,
                 stream_id=source.request.stream_id)
        return source

    async def _stop(self, source: PullSource) -> None:
        self._active.pop(source.key, None)
        if source.runner is not None:
            source.runner.cancel()
            await asyncio.gather(source.runner, return_exceptions=True)
        stream = source.stream
        if stream is not None and self._streams.rooms.by_resource(stream.resource_id) is stream:
            await self._streams.unpublish(stream.resource_id, reason="pull source deleted")
        await self._end_session(source)
        source.state, source.stopped_at, source.live_since_ms = PullState.STOPPED, time.monotonic(), None

    async def close(self) -> None:
        """The node stops: every source ends (WHEP sessions DELETEd), nothing is retried."""
        await asyncio.gather(*(self._stop(s) for s in list(self._active.values())), return_exceptions=True)
        if self._http is not None:
            await self._http.close()

    def stream_left(self, stream: PublishedStream, reason: str) -> None:
        """Called by the node whenever a stream leaves its room."""
        for source in self._active.values():
            if source.stream is stream and source.state is PullState.LIVE:
                source.left_reason = reason
                source.left.set()

    # the runner
    async def _run(self, source: PullSource) -> None:
        delay = defaults.PULL_RETRY_FIRST_S
        while True:
            source.attempts += 1
            try:
                await self._connect(source)
            except PullFailed as error:
                source.failed(str(error))
                log.info("pull_failed", source_id=source.source_id, reason=str(error), retry_in_s=delay)
            except Exception as error:  # a bug must not end the source silently
                log.exception("pull_attempt_crashed", source_id=source.source_id)
                source.failed(f"internal error: {type(error).__name__}")
            else:
                delay = defaults.PULL_RETRY_FIRST_S
                await source.left.wait()
                source.drops += 1
                source.failed(f"dropped: {source.left_reason}")
                log.info("pull_dropped", source_id=source.source_id, reason=source.left_reason, retry_in_s=delay)
                await self._end_session(source)
            source.next_attempt_at = time.monotonic() + delay
            await asyncio.sleep(delay)
            delay = min(delay * 2, defaults.PULL_RETRY_MAX_S)

    async def _connect(self, source: PullSource) -> None:
        streams, request = self._streams, source.request
        try:
            streams.admit(request.room_id, request.stream_id, pull=True)
            await check_outbound(self._config, request.url)
        except (errors.IngestError, errors.InvalidParameter) as error:
            raise PullFailed(getattr(error, "reason", None) or str(error)) from None
        stream, fresh = await self._stream_for(source)
        worker = stream.worker
        assert worker is not None
        try:
            if request.kind is InputKind.WHEP:
                connected = await self._connect_whep(source, worker)
            else:
                connected = await self._ask(worker, protocol.OpenSource, defaults.PULL_OPEN_TIMEOUT_S + 5)
        except BaseException:
            if fresh:
                await worker.stop()
            else:
                streams.rooms.linger(stream)  # the recordings kept open wait on
            await self._end_session(source)
            raise
        stream.spec = StreamSpec(request.room_id, request.stream_id, request.user_id, connected.tracks)
        stream.unpublished = False
        if not fresh:
            stream.resource_id = secrets.token_urlsafe(12)
        source.left, source.left_reason = asyncio.Event(), ""
        source.tracks, source.ignored = connected.tracks, connected.ignored
        source.state, source.live_since_ms, source.next_attempt_at = PullState.LIVE, SYSTEM_CLOCK.wall_ms(), None
        source.connects += 1
        streams.rooms.add(stream)
        log.info("pull_live", source_id=source.source_id, room_id=request.room_id, stream_id=request.stream_id,
                 kind=request.kind, worker_pid=worker.pid, tracks=[f"{t.kind}:{t.codec}" for t in connected.tracks],
                 ignored=connected.ignored)
        await asyncio.shield(streams.stream_ready(stream))

    async def _stream_for(self, source: PullSource) -> tuple[PublishedStream, bool]:
        """The source's stream and whether its worker is new: the one it left lingering
        (FillBlank) is reused; another publisher's kept for FillBlank is ended (its file
        closes; the pulled stream records into a new one)."""
        streams, request = self._streams, source.request
        lingering = streams.rooms.take_lingering(request.room_id, request.stream_id)
        if lingering is not None and lingering is source.stream and lingering.worker is not None:
            return lingering, False
        if lingering is not None and lingering.worker is not None:
            await lingering.worker.stop()
        stream = PublishedStream(StreamSpec(request.room_id, request.stream_id, request.user_id, ()), None,
                                 request.user_id, "", SYSTEM_CLOCK.wall_ms(), kind=request.kind,
                                 unpublished=True)  # not in the room until connected
        pull = PullSpec(url=request.url if request.kind is InputKind.RTSP else "", transport=request.transport,
                        open_timeout_s=defaults.PULL_OPEN_TIMEOUT_S,
                        stall_timeout_s=self._config.rtp_inactivity_timeout_s)
        spawning = asyncio.ensure_future(streams.spawn_pull_worker(stream, pull))
        try:
            await asyncio.shield(spawning)
        except errors.IngestError as error:
            raise PullFailed(error.reason) from None
        except asyncio.CancelledError:  # deleted while its worker starts: that worker must not outlive it
            await asyncio.gather(spawning, return_exceptions=True)
            if stream.worker is not None:
                await stream.worker.stop()
            raise
        source.stream = stream
        return stream, True

    async def _connect_whep(self, source: PullSource, worker: StreamWorker) -> protocol.PullConnected:
        made = await self._ask(worker, protocol.MakeOffer, WORKER_REQUEST_S)
        assert isinstance(made, protocol.OfferMade)
        try:
            with egress.enforced(self._policy):  # the address actually connected to, redirects included
                session = await whep_client.post_offer(self._session(), source.request.url, made.offer,
                                                       source.request.bearer_token, self._check_whep_url)
        except whep_client.WhepError as error:
            raise PullFailed(str(error)) from None
        source.whep_resource = session.resource_url
        connected = await self._ask(worker, lambda rid: protocol.AcceptAnswer(rid, session.answer),
                                    defaults.PULL_OPEN_TIMEOUT_S + 5)
        return connected

    @staticmethod
    async def _ask(worker: StreamWorker, make, timeout: float) -> Any:
        try:
            reply = await worker.request(make, timeout=timeout)
        except (WorkerGone, TimeoutError):
            raise PullFailed("the stream's worker did not answer") from None
        if not reply.ok or reply.payload is None:
            raise PullFailed(reply.error or "the stream's worker could not connect")
        return reply.payload

    async def _check_whep_url(self, url: str) -> None:
        if urllib.parse.urlsplit(url).scheme.lower() not in URL_SCHEMES[InputKind.WHEP]:
            raise whep_client.WhepError("the WHEP server redirected to a URL that is not http(s)")
        try:
            await check_outbound(self._config, url, "the WHEP server's redirect or resource URL")
        except errors.InvalidParameter as error:
            raise whep_client.WhepError(error.message) from None

    async def _end_session(self, source: PullSource) -> None:
        resource, source.whep_resource = source.whep_resource, None
        if resource is not None:
            with egress.enforced(self._policy):
                await whep_client.delete_resource(self._session(), resource, source.request.bearer_token,
                                                  self._check_whep_url)

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession()
        return self._http
