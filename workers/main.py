"""Worker mode: one OS process per published stream, serving its control pipe.

Started by the supervisor from the preloaded template process with an
already-validated WorkerConfig and the child end of a control pipe. It binds its
input, answers Ready (the handshake), then records for every task the
supervisor adds, until told to stop, until SIGTERM, or until the pipe closes
(the supervisor is gone): in every case it finishes its files before exiting.
This module serves the pipe and owns the input's life cycle; what is recorded,
and when files start and roll over, is `workers.recordings`.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import time
from dataclasses import replace
from multiprocessing.connection import Connection

import structlog

from contract import protocol
from contract.codes import InputKind, MediaKind, OfferRefusal
from contract.worker import PullSpec, StreamSpec, WorkerConfig
from workers.frames import EncodedFrame
from workers.inputs.base import StreamInput
from workers.inputs.factory import InputHandlers, build_input
from workers.inputs.rtsp import RtspInput, SourceError
from workers.inputs.webrtc import OfferError, WebRtcInput
from workers.inputs.whep import WhepInput
from workers.logs import configure_logging
from workers.recordings import StreamRecordings
from workers.template import imported_after_fork

log = structlog.get_logger("worker")

# Sockets are drained, jitter buffers polled and pending recordings retried once per tick:
# one wakeup per tick, whatever the packet rate (workers.inputs.udp says why). A wakeup costs
# ~0.15-0.2 ms of CPU on a VM (benchmarks/results/profile-before.md): at 20 ticks a second that
# was a third of a plain-RTP worker, so ticks are TICK_S apart, and a jitter buffer waiting on a
# hole gets a tick at its deadline (`StreamInput.next_deadline`): the bounded wait stays bounded.
TICK_S = 0.1
DEADLINE_SLACK_S = 0.001  # a deadline tick comes this much after the deadline, never before
EXIT_GRACE_S = 5.0
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the control pipe's EOF still tells us


class StreamWorker:
    def __init__(self, config: WorkerConfig, conn: Connection):
        self.config = config
        self._conn = conn
        self._handlers = InputHandlers(self._on_frame, self._on_sender_report, self._on_peer_closed)
        self.recordings = StreamRecordings(config.stream, config.tuning, self._send, self._request_keyframe)
        self.input: StreamInput | None = self._build_input(config) if config.input_kind is InputKind.RTP else None
        self._offer: WhepInput | None = None  # WHEP: made, waiting for the server's answer
        self._mark_input_started()
        self._stopping = asyncio.Event()
        self._background: set[asyncio.Task] = set()
        self._ticker: asyncio.TimerHandle | None = None
        self._next_progress = 0.0

    def _mark_input_started(self) -> None:
        self._input_started = time.monotonic()
        self._inactive_reported = False

    # pipe
    def _send(self, message: object) -> None:
        try:
            self._conn.send(message)
        except (BrokenPipeError, OSError):
            self._stopping.set()

    def _on_pipe_readable(self) -> None:
        try:
            while self._conn.poll():
                self._handle(self._conn.recv())
        except (EOFError, OSError):
            log.warning("supervisor_gone")
            asyncio.get_running_loop().remove_reader(self._conn.fileno())
            self._stopping.set()

    def _catch_up(self) -> None:
        """Take in what the input received since the last tick, so a control request
        (stop, stats, ...) acts on every packet that arrived before it."""
        if self.input is not None:
            self.input.tick(time.monotonic())

    def _handle(self, request: protocol.Request) -> None:
        self._catch_up()
        match request:
            case protocol.StartRecording(request_id, spec):
                self.recordings.start(spec, time.monotonic())
                self._send(protocol.Reply(request_id, True))
            case protocol.StopRecording(request_id, task_id):
                closing = self.recordings.stop(task_id)
                if closing is None:
                    self._send(protocol.Reply(request_id, True))
                else:
                    self._in_background(self._reply_when_done(closing, request_id))
            case protocol.PauseRecording(request_id, task_id):
                self._send(protocol.Reply(request_id, self.recordings.pause(task_id)))
            case protocol.ResumeRecording(request_id, task_id):
                self._send(protocol.Reply(request_id, self.recordings.resume(task_id)))
            case protocol.TakeSnapshot(request_id, task_id):
                self._send(protocol.Reply(request_id, self.recordings.take_snapshot(task_id, time.monotonic())))
            case protocol.StopInput(request_id):
                self._replace_input(None)
                self._send(protocol.Reply(request_id, True))
            case protocol.StartInput(request_id, stream, ports):
                self._in_background(self._restart_input(request_id, stream, ports))
            case protocol.AcceptOffer(request_id, sdp):
                self._in_background(self._accept_offer(request_id, sdp))
            case protocol.MakeOffer(request_id):
                self._in_background(self._make_offer(request_id))
            case protocol.AcceptAnswer(request_id, sdp):
                self._in_background(self._accept_answer(request_id, sdp))
            case protocol.OpenSource(request_id):
                self._in_background(self._open_source(request_id))
            case protocol.StopStream(request_id):
                self._send(protocol.Reply(request_id, True))
                self._stopping.set()
            case protocol.GetStats(request_id):
                stats = protocol.StreamStats(self.input.stats() if self.input else {}, tuple(self.recordings.by_task))
                self._send(protocol.Reply(request_id, True, stats))

    def _in_background(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reply_when_done(self, closing, request_id: int) -> None:
        await closing
        self._send(protocol.Reply(request_id, True))

    # the input's life cycle
    def _build_input(self, config: WorkerConfig) -> StreamInput:
        """An input whose end (`on_closed`) counts only while it is this worker's input:
        one being negotiated, or already replaced, ends unreported."""
        built: list[StreamInput] = []

        def on_closed(reason: str) -> None:
            if built and built[0] is self.input:
                self._on_peer_closed(reason)

        built.append(build_input(config, replace(self._handlers, on_closed=on_closed)))
        return built[0]

    def _replace_input(self, new: StreamInput | None, stream: StreamSpec | None = None) -> None:
        """Close the current input; with a new one, the stream starts a new session
        (fresh clock and GOP; kept recordings continue)."""
        if self.input is not None:
            self.input.close()
        self.input = new
        if new is not None:
            if stream is not None:
                self.config = replace(self.config, stream=stream)
                self.recordings.new_session(stream)
            self._mark_input_started()

    async def _restart_input(self, request_id: int, stream: StreamSpec, ports: tuple[int, ...]) -> None:
        """A FillBlank stream is published again (plain RTP): receive it on new ports."""
        config = replace(self.config, stream=stream, rtp_ports=ports)
        new = self._build_input(config)
        self._replace_input(None)
        try:
            await new.start()
        except OSError as error:
            self._send(protocol.Reply(request_id, False, protocol.InputBound(ports), f"cannot bind: {error}"))
            return
        self.config = config
        self._replace_input(new, stream)
        log.info("input_restarted", ports=ports, recordings=len(self.recordings.by_task))
        self._send(protocol.Reply(request_id, True, protocol.InputBound(ports)))

    async def _accept_offer(self, request_id: int, sdp: str) -> None:
        """WHIP: a new peer connection answers the offer and replaces any input."""
        peer = self._build_input(replace(self.config, input_kind=InputKind.WHIP))
        assert isinstance(peer, WebRtcInput)
        try:
            await peer.start()
            answer = await peer.accept_offer(sdp)
        except (OfferError, OSError) as error:
            await peer.aclose()
            refusal = error.refusal if isinstance(error, OfferError) else OfferRefusal.FAILED
            self._send(protocol.Reply(request_id, False, protocol.OfferRefused(refusal), str(error)))
            return
        self._replace_input(peer, replace(self.config.stream, tracks=peer.tracks))
        log.info("peer_connected", tracks=[f"{t.kind}:{t.codec}" for t in peer.tracks])
        self._send(protocol.Reply(request_id, True, protocol.OfferAnswer(answer, peer.tracks)))

    # pulled sources: the worker connects, the engine decides when to try again
    async def _make_offer(self, request_id: int) -> None:
        """WHEP: a new receive-only offer; one made before and never answered is dropped."""
        if self._offer is not None:
            await self._offer.aclose()
        peer = self._build_input(replace(self.config, input_kind=InputKind.WHEP))
        assert isinstance(peer, WhepInput)
        try:
            await peer.start()
            offer = await peer.make_offer()
        except OSError as error:
            await peer.aclose()
            self._send(protocol.Reply(request_id, False, error=f"cannot make an offer: {error}"))
            return
        self._offer = peer
        self._send(protocol.Reply(request_id, True, protocol.OfferMade(offer)))

    async def _accept_answer(self, request_id: int, sdp: str) -> None:
        """WHEP: the server's answer; the peer connection becomes the input (a FillBlank
        recording continues on it) and the reply waits until it is connected."""
        peer, self._offer = self._offer, None
        if peer is None:
            self._send(protocol.Reply(request_id, False, error="no offer waits for an answer"))
            return
        pull = self.config.pull or PullSpec()
        try:
            tracks = await peer.apply_answer(sdp)
            self._replace_input(peer, replace(self.config.stream, tracks=tracks))
            await peer.wait_connected(pull.open_timeout_s)
        except (OfferError, OSError) as error:
            if self.input is peer:
                self._replace_input(None)
            await peer.aclose()
            self._send(protocol.Reply(request_id, False, error=str(error)))
            return
        log.info("whep_connected", tracks=[f"{t.kind}:{t.codec}" for t in tracks])
        self._send(protocol.Reply(request_id, True, protocol.PullConnected(tracks)))

    async def _open_source(self, request_id: int) -> None:
        """RTSP: connect to the camera; once its tracks are known it becomes the input."""
        source = self._build_input(replace(self.config, input_kind=InputKind.RTSP))
        assert isinstance(source, RtspInput)
        try:
            await source.start()
            tracks, ignored = await source.open()
        except Exception as error:  # SourceError says why; anything else must not go unanswered
            if not isinstance(error, SourceError | OSError):
                log.exception("rtsp_open_failed")
            await source.aclose()
            self._send(protocol.Reply(request_id, False, error=str(error) or type(error).__name__))
            return
        self._replace_input(source, replace(self.config.stream, tracks=tracks))
        log.info("rtsp_connected", tracks=[f"{t.kind}:{t.codec}" for t in tracks], ignored=ignored)
        self._send(protocol.Reply(request_id, True, protocol.PullConnected(tracks, ignored)))

    def _on_peer_closed(self, reason: str) -> None:
        log.info("peer_closed", reason=reason)
        if not self._inactive_reported:
            self._inactive_reported = True
            self._send(protocol.StreamInactive(0.0, reason))

    def _check_inactive(self, now: float) -> None:
        assert self.input is not None
        last = max(self.input.last_packet or 0.0, self._input_started)
        if not self._inactive_reported and now - last >= self.config.inactivity_timeout_s:
            self._inactive_reported = True
            log.info("stream_inactive", idle_s=round(now - last, 2))
            self._send(protocol.StreamInactive(now - last))

    # media
    def _on_sender_report(self, kind: MediaKind, ntp: int, rtp: int) -> None:
        self.recordings.on_sender_report(kind, ntp, rtp)

    def _on_frame(self, frame: EncodedFrame) -> None:
        self.recordings.on_frame(frame, time.monotonic())

    def _request_keyframe(self) -> bool:
        if self.input is None:
            return False
        self.input.request_keyframe()
        return True

    def _tick(self) -> None:
        """Every TICK_S. A timer callback rather than a sleeping coroutine: one event-loop
        iteration per tick instead of two. The next tick is scheduled first, so an error
        here is logged by the loop and does not stop the ticking."""
        loop = asyncio.get_running_loop()
        self._ticker = loop.call_later(TICK_S, self._tick)
        now = time.monotonic()
        if self.input is not None:
            self.input.tick(now)
            self._check_inactive(now)
            deadline = self.input.next_deadline()
            if deadline is not None and deadline + DEADLINE_SLACK_S < now + TICK_S:
                self._ticker.cancel()
                self._ticker = loop.call_at(max(deadline + DEADLINE_SLACK_S, loop.time()), self._tick)
        self.recordings.tick(now)
        if now >= self._next_progress:
            self._next_progress = now + self.config.tuning.progress_interval_s
            for progress in self.recordings.progress():
                self._send(progress)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        if self.config.fast_consent:
            import aioice.ice

            aioice.ice.CONSENT_INTERVAL, aioice.ice.CONSENT_FAILURES = 1.0, 3
        try:
            if self.input is not None:
                await self.input.start()
        except OSError as error:
            self._send(protocol.StartFailed(f"cannot bind: {error}", self.config.rtp_ports))
            return 1
        loop.add_signal_handler(signal.SIGTERM, self._stopping.set)
        loop.add_reader(self._conn.fileno(), self._on_pipe_readable)
        self._send(protocol.Ready(os.getpid(), self.config.rtp_ports))
        log.info("worker_ready", ports=self.config.rtp_ports)
        self._next_progress = time.monotonic() + self.config.tuning.progress_interval_s
        self._ticker = loop.call_later(TICK_S, self._tick)
        await self._stopping.wait()
        if self._ticker is not None:
            self._ticker.cancel()
        self._catch_up()
        for source in (self.input, self._offer):
            if source is not None:
                await source.aclose()
        await self.recordings.close_all()
        if self._background:  # replies to StopRecording still on their way
            await asyncio.wait(self._background, timeout=EXIT_GRACE_S)
        log.info("worker_exit", imported_after_fork=imported_after_fork())
        return 0


def entry(config: WorkerConfig, conn: Connection) -> None:
    """Process target: runs in a child forked from the template process."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the supervisor, which stops us in order
    configure_logging(config.log_level)
    structlog.contextvars.bind_contextvars(room_id=config.stream.room_id, stream_id=config.stream.stream_id,
                                           worker_pid=os.getpid())
    code = asyncio.run(StreamWorker(config, conn).run())
    conn.close()
    os._exit(code)
