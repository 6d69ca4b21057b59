"""The input extension point: something that delivers a stream's EncodedFrames."""

from __future__ import annotations

import abc
from collections.abc import Callable

from contract.codes import MediaKind
from workers.frames import EncodedFrame

FrameHandler = Callable[[EncodedFrame], None]
SenderReportHandler = Callable[[MediaKind, int, int], None]  # kind, NTP 64-bit, RTP 32-bit


class StreamInput(abc.ABC):
    def __init__(self, on_frame: FrameHandler, on_sender_report: SenderReportHandler):
        self.on_frame = on_frame
        self.on_sender_report = on_sender_report

    @abc.abstractmethod
    async def start(self) -> None:
        """Begin receiving; raise OSError when the input cannot bind."""

    @abc.abstractmethod
    def request_keyframe(self) -> None: ...

    @abc.abstractmethod
    def tick(self, now: float) -> None:
        """Called on a short timer: release what waited long enough."""

    def next_deadline(self) -> float | None:
        """When (time.monotonic()) `tick` must run next to give up a hole in time, or None:
        the worker ticks then if it is sooner than its next tick."""
        return None

    @abc.abstractmethod
    def stats(self) -> dict[str, dict[str, float]]: ...

    @abc.abstractmethod
    def close(self) -> None:
        """Stop receiving now; what closing leaves running finishes in `aclose`."""

    async def aclose(self) -> None:
        """Close and wait until everything the input opened is released."""
        self.close()

    @property
    @abc.abstractmethod
    def last_packet(self) -> float | None:
        """Monotonic time media last arrived, None before any."""
