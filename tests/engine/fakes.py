"""In-memory twins for the control plane's unit tests.

A fake worker answers the control pipe's requests as a worker does and says
what a worker says (a file opened on StartRecording, closed on StopRecording,
all closed on StopStream, before the reply), writing a small file per recording
under the node's storage root; `crash()` is a SIGKILL. A fake supervisor starts
them; a clock the test moves; a callback transport that answers as told.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from contract import protocol
from contract.codes import MediaKind, OfferRefusal
from contract.worker import RecordingSpec, TrackSpec, WorkerConfig
from engine.events import OnEvent, OnExit
from engine.supervisor import WorkerGone, WorkerStartError

FILE_BYTES = b"not really an mp4 " * 64
PID_MAX_LIMIT = 4_194_304  # the largest pid Linux hands out (kernel.pid_max at most)
WHIP_ANSWER = "v=0\r\ns=fake answer\r\n"
WHIP_TRACKS = (TrackSpec(MediaKind.VIDEO, "H264", 102, 90000), TrackSpec(MediaKind.AUDIO, "opus", 111, 48000, 2))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.wall = 1_760_000_000_000

    def monotonic(self) -> float:
        return self.now

    def wall_ms(self) -> int:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall += int(seconds * 1000)


@dataclass
class _OpenFile:
    key: str
    path: Path


class FakeWorker:
    def __init__(self, config: WorkerConfig, on_event: OnEvent, on_exit: OnExit, pid: int,
                 offer_refusal: OfferRefusal | None):
        self.config = config
        self.pid = pid
        self.stopping = False
        self.exited = False
        self._gone = asyncio.Event()
        self.requests: list[protocol.Request] = []
        self._on_event = on_event
        self._on_exit = on_exit
        self._offer_refusal = offer_refusal
        self._ids = itertools.count(1)
        self._files: dict[str, _OpenFile] = {}  # by task id
        self.track_stats: dict[str, dict[str, float]] = {"video": {"frames": 1.0}}  # what GetStats answers

    def of_type[R](self, kind: type[R]) -> list[R]:
        return [r for r in self.requests if isinstance(r, kind)]

    async def request(self, make: Callable[[int], protocol.Request], timeout: float = 10.0) -> protocol.Reply:
        if self.exited:
            raise WorkerGone(f"worker {self.pid} has exited")
        message = make(next(self._ids))
        self.requests.append(message)
        payload: protocol.ReplyPayload | None = None
        match message:
            case protocol.StartRecording():
                self._open(message.spec)
            case protocol.StopRecording():
                self._close(message.task_id)
            case protocol.StopStream():
                for task_id in list(self._files):
                    self._close(task_id)
                asyncio.get_running_loop().call_soon(self._exit, 0)  # after the reply, as a worker does
            case protocol.AcceptOffer() if self._offer_refusal is not None:
                return protocol.Reply(message.request_id, False, protocol.OfferRefused(self._offer_refusal), "refused")
            case protocol.AcceptOffer():
                payload = protocol.OfferAnswer(WHIP_ANSWER, WHIP_TRACKS)
            case protocol.StartInput():
                payload = protocol.InputBound(message.rtp_ports)
            case protocol.GetStats():
                payload = protocol.StreamStats(self.track_stats, tuple(self._files))
        return protocol.Reply(message.request_id, True, payload)

    async def stop(self) -> None:
        self.stopping = True
        if not self.exited:
            await self.request(protocol.StopStream)
        await self._gone.wait()

    def say(self, event: protocol.Event) -> None:
        self._on_event(self, event)

    def crash(self) -> None:
        """SIGKILL: no last word; what it wrote stays on disk."""
        self._files.clear()
        self._exit(-9)

    def _exit(self, code: int) -> None:
        if not self.exited:
            self.exited = True
            self._gone.set()
            self._on_exit(self, code)

    def _open(self, spec: RecordingSpec) -> None:
        if spec.task_id in self._files or spec.output_format == "jpg":  # idempotent; pictures are no file
            return
        stream = self.config.stream
        key = f"{spec.output_folder}{spec.task_id}_{stream.stream_id}_{self.pid}_{len(self.requests)}.mp4"
        target = spec.storage.target
        assert target.local_root is not None, "the fake worker writes to the node's disk (Vendor 0)"
        path = Path(target.local_root) / target.bucket / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(FILE_BYTES)
        self._files[spec.task_id] = _OpenFile(key, path)
        self.say(protocol.FileOpened(spec.task_id, key, path.as_uri(), "mp4", 3, begin_ms=1, width=64, height=48))

    def _close(self, task_id: str) -> None:
        file = self._files.pop(task_id, None)
        if file is not None:
            self.say(protocol.FileClosed(task_id, file.key, len(FILE_BYTES), 1000, True,
                                         hashlib.sha256(FILE_BYTES).hexdigest()))


class FakeSupervisor:
    def __init__(self) -> None:
        self.workers: set[FakeWorker] = set()
        self.started: list[FakeWorker] = []
        self.failures = 0  # the next this many starts fail
        self.offer_refusal: OfferRefusal | None = None
        self._pids = itertools.count(PID_MAX_LIMIT + 1)  # no real process: admission's CPU sampling finds none

    async def warm_up(self) -> None:
        pass

    async def spawn(self, config: WorkerConfig, on_event: OnEvent, on_exit: OnExit) -> FakeWorker:
        if self.failures:
            self.failures -= 1
            raise WorkerStartError("the fake worker was told to fail")

        def exited(worker, code: int | None) -> None:
            self.workers.discard(worker)
            on_exit(worker, code)

        worker = FakeWorker(config, on_event, exited, next(self._pids), self.offer_refusal)
        self.workers.add(worker)
        self.started.append(worker)
        return worker

    async def stop_all(self) -> None:
        await asyncio.gather(*(w.stop() for w in list(self.workers)))

    def kill_all(self) -> None:
        for worker in list(self.workers):
            worker.stopping = True
            worker.crash()


class FakeTransport:
    """Callbacks' HTTP client: answers each POST with the next status of `answers`
    (then the last one again); records what was posted."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers) or [200]
        self.posts: list[dict] = []

    async def post(self, url: str, body: dict) -> int:
        self.posts.append(body)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def close(self) -> None:
        pass

    def sequences(self) -> list[tuple[str, int, int]]:
        return [(b["task_id"], b["sequence"], b["event_type"]) for b in self.posts]
