"""Worker mode: one OS process per published stream.

Started by the supervisor from the preloaded template process with an
already-validated WorkerConfig and the child end of a control pipe. It binds its
input, answers Ready (the handshake), then records for every task the
supervisor adds, until told to stop, until SIGTERM, or until the pipe closes
(the supervisor is gone): in every case it finishes its files before exiting.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from multiprocessing.connection import Connection

import structlog

from contract import protocol
from contract.codes import InputKind, MediaKind, OfferRefusal
from contract.worker import WorkerConfig
from workers.clock import StreamClock
from workers.frames import EncodedFrame
from workers.gop import GopCache
from workers.inputs.base import StreamInput
from workers.inputs.rtp import RtpInput
from workers.logs import configure_logging
from workers.recording import Recording, State

log = structlog.get_logger("worker")

# Sockets are drained, jitter buffers polled and pending recordings retried once per tick:
# one wakeup per tick, whatever the packet rate (workers.inputs.udp says why).
TICK_S = 0.05
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
        stream = config.stream
        self.recordings: dict[str, Recording] = {}
        self._new_session(config)
        self._uploader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="uploader")
        self._stopping = asyncio.Event()
        self._closing: set[asyncio.Task] = set()
        self._keyframe_wanted = False
        self._ticker: asyncio.TimerHandle | None = None
        self._next_progress = 0.0

    def _new_session(self, config: WorkerConfig, stream_input: StreamInput | None = None) -> None:
        """A (re)published stream: fresh input, clock and GOP; kept recordings continue."""
        self.config = config
        stream = config.stream
        self.clock = StreamClock({t.kind: t.clock_rate for t in stream.tracks}, config.tuning.sync_wait_for_sr_s)
        self.gop = GopCache(has_video=stream.track(MediaKind.VIDEO) is not None, max_s=config.tuning.gop_cache_max_s)
        if stream_input is None and config.input_kind is InputKind.RTP:
            stream_input = RtpInput(config, self._on_frame, self._on_sender_report)
        self.input: StreamInput | None = stream_input
        self._input_started = time.monotonic()
        self._inactive_reported = False
        for task_id, recording in list(self.recordings.items()):
            if recording.codec_changed(stream):
                self._next_file(task_id, recording, "codec_changed")
            else:
                recording.new_session(self.clock)

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
                if spec.task_id not in self.recordings:
                    recording = Recording(spec, self.config.stream, self.clock, self._uploader, self._send,
                                          fragment_duration_us=self.config.tuning.fragment_duration_us)
                    self.recordings[spec.task_id] = recording
                    self._try_begin(recording, time.monotonic())
                self._send(protocol.Reply(request_id, True))
            case protocol.StopRecording(request_id, task_id):
                recording = self.recordings.pop(task_id, None)
                if recording is None:
                    self._send(protocol.Reply(request_id, True))
                else:
                    self._spawn_close(recording, request_id)
            case protocol.PauseRecording(request_id, task_id) | protocol.ResumeRecording(request_id, task_id):
                recording = self.recordings.get(task_id)
                if recording is not None:
                    if isinstance(request, protocol.PauseRecording):
                        recording.pause()
                    else:
                        recording.resume()
                        if self.input is not None:
                            self.input.request_keyframe()
                self._send(protocol.Reply(request_id, recording is not None))
            case protocol.StopInput(request_id):
                if self.input is not None:
                    self.input.close()
                    self.input = None
                self._send(protocol.Reply(request_id, True))
            case protocol.StartInput(request_id, stream, ports):
                asyncio.get_running_loop().create_task(self._restart_input(request_id, stream, ports))
            case protocol.AcceptOffer(request_id, sdp):
                asyncio.get_running_loop().create_task(self._accept_offer(request_id, sdp))
            case protocol.StopStream(request_id):
                self._send(protocol.Reply(request_id, True))
                self._stopping.set()
            case protocol.GetStats(request_id):
                stats = protocol.StreamStats(self.input.stats() if self.input else {}, tuple(self.recordings))
                self._send(protocol.Reply(request_id, True, stats))

    def _spawn_close(self, recording: Recording, request_id: int | None) -> None:
        async def close() -> None:
            await recording.close()
            if request_id is not None:
                self._send(protocol.Reply(request_id, True))

        task = asyncio.get_running_loop().create_task(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _restart_input(self, request_id: int, stream, ports: tuple[int, ...]) -> None:
        if self.input is not None:
            self.input.close()
        self._new_session(replace(self.config, stream=stream, rtp_ports=ports))
        try:
            await self.input.start()
        except OSError as error:
            self.input = None
            self._send(protocol.Reply(request_id, False, protocol.InputBound(ports), f"cannot bind: {error}"))
            return
        log.info("input_restarted", ports=ports, recordings=len(self.recordings))
        self._send(protocol.Reply(request_id, True, protocol.InputBound(ports)))

    async def _accept_offer(self, request_id: int, sdp: str) -> None:
        from workers.inputs.webrtc import OfferError, WebRtcInput, WebRtcSettings

        settings = WebRtcSettings(host_addresses=self.config.webrtc_hosts,
                                  advertised_address=self.config.webrtc_advertised,
                                  port_range=self.config.webrtc_ports, jitter_max_wait_s=self.config.tuning.jitter_max_wait_s)
        peer = WebRtcInput(settings, self._on_frame, self._on_sender_report, self._on_peer_closed)
        try:
            answer = await peer.accept_offer(sdp)
        except (OfferError, OSError) as error:
            await peer.aclose()
            refusal = error.refusal if isinstance(error, OfferError) else OfferRefusal.FAILED
            self._send(protocol.Reply(request_id, False, protocol.OfferRefused(refusal), str(error)))
            return
        if self.input is not None:
            self.input.close()
        stream = replace(self.config.stream, tracks=peer.tracks)
        self._new_session(replace(self.config, stream=stream), peer)
        log.info("peer_connected", tracks=[f"{t.kind}:{t.codec}" for t in peer.tracks])
        self._send(protocol.Reply(request_id, True, protocol.OfferAnswer(answer, peer.tracks)))

    def _on_peer_closed(self, reason: str) -> None:
        log.info("peer_closed", reason=reason)
        if not self._inactive_reported:
            self._inactive_reported = True
            self._send(protocol.StreamInactive(0.0, reason))

    # media
    def _on_sender_report(self, kind: MediaKind, ntp: int, rtp: int) -> None:
        self.clock.tracks[kind].on_sender_report(ntp, rtp)

    def _on_frame(self, frame: EncodedFrame) -> None:
        self.clock.tracks[frame.kind].on_frame(frame.rtp_timestamp, frame.arrival)
        self.gop.add(frame, hold=any(r.state is State.PENDING for r in self.recordings.values()))
        now = time.monotonic()
        for task_id, recording in list(self.recordings.items()):
            if recording.state is State.ACTIVE and recording.resolution_changed(frame):
                recording = self._next_file(task_id, recording, "resolution_changed")
            if recording.state in (State.ACTIVE, State.RESUMING):
                recording.write(frame)
            elif recording.state is State.PENDING:
                self._try_begin(recording, now, frame)

    def _next_file(self, task_id: str, old: Recording, reason: str) -> Recording:
        """The picture size (a browser under load) or the codec (a publisher back with
        another one) changed: close the file, start another."""
        log.info(reason, task_id=task_id)
        self._spawn_close(old, None)
        new = Recording(old.spec, self.config.stream, self.clock, self._uploader, self._send,
                        fragment_duration_us=self.config.tuning.fragment_duration_us)
        if old.state is State.PAUSED:
            new.pause()
        self.recordings[task_id] = new
        return new

    def _try_begin(self, recording: Recording, now: float, frame: EncodedFrame | None = None) -> None:
        if not self.clock.settled(now):
            return
        if recording.video_spec is None:  # audio only: no GOP to wait for, start on this packet
            if frame is not None:
                recording.begin([frame], now)
            return
        if recording.video_spec is not None and not self.gop.has_keyframe:
            if not self._keyframe_wanted and self.input is not None:
                self._keyframe_wanted = True
                self.input.request_keyframe()
            return
        if recording.begin(self.gop.frames(), now):
            self._keyframe_wanted = False

    def _tick(self) -> None:
        """Every TICK_S. A timer callback rather than a sleeping coroutine: one event-loop
        iteration per tick instead of two. The next tick is scheduled first, so an error
        here is logged by the loop and does not stop the ticking."""
        self._ticker = asyncio.get_running_loop().call_later(TICK_S, self._tick)
        now = time.monotonic()
        if self.input is not None:
            self.input.tick(now)
            self._check_inactive(now)
        for recording in self.recordings.values():
            if recording.state is State.PENDING:
                self._try_begin(recording, now)
        if now >= self._next_progress:
            self._next_progress = now + self.config.tuning.progress_interval_s
            for recording in self.recordings.values():
                for progress in recording.progress():
                    self._send(progress)

    def _check_inactive(self, now: float) -> None:
        assert self.input is not None
        last = max(self.input.last_packet or 0.0, self._input_started)
        if not self._inactive_reported and now - last >= self.config.inactivity_timeout_s:
            self._inactive_reported = True
            log.info("stream_inactive", idle_s=round(now - last, 2))
            self._send(protocol.StreamInactive(now - last))

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
        if self.input is not None:
            self.input.close()
            if hasattr(self.input, "aclose"):
                await self.input.aclose()
        for recording in list(self.recordings.values()):
            self._spawn_close(recording, None)
        self.recordings.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        self._uploader.shutdown(wait=True)
        log.info("worker_exit")
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
