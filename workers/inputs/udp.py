"""A UDP socket the worker drains on its tick instead of waking up per datagram.

Why polling: on these machines one event-loop wakeup costs ~150-200 us of CPU
(kernel timer + asyncio's loop iteration), several times what parsing and
muxing one packet costs. A 2.5 Mb/s stream is ~310 datagrams/s, so waking per
datagram made the wakeups most of a worker's CPU (benchmarks/results). The
worker already ticks every `TICK_S` (workers.main) for its jitter buffers; draining
every socket then costs one wakeup per tick whatever the packet rate, and the
kernel's receive buffer (`RECEIVE_BUFFER_BYTES`, seconds of video) holds what
arrives in between.

Arrival times stay exact: the kernel stamps each datagram (SO_TIMESTAMPNS) and
the stamp is mapped onto `time.monotonic()`, so lip sync by arrival time (no
Sender Reports) and the jitter buffer's waits do not depend on when we polled.
Where the platform gives no stamp, the drain time is used.
"""

from __future__ import annotations

import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger("udp")

# A key frame arrives as a burst of packets (100+ at 8 Mbps), and the socket is only
# read every tick: ask for a receive buffer of seconds of video (root may exceed
# net.core.rmem_max).
RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024
MAX_DATAGRAM_BYTES = 65535
# Linux: SO_TIMESTAMPNS (not exported by Python's socket module); the ancillary
# message carries a struct timespec of CLOCK_REALTIME.
SO_TIMESTAMPNS = 35 if sys.platform.startswith("linux") else None
_TIMESPEC = struct.Struct("@qq")
_STAMP_BYTES = _TIMESPEC.size
_ANCILLARY_BYTES = socket.CMSG_SPACE(_TIMESPEC.size) if SO_TIMESTAMPNS is not None else 0

Address = tuple  # as recvmsg gives it: (host, port), or (host, port, flowinfo, scope_id) for IPv6
# (datagrams, their arrivals on time.monotonic()): consecutive datagrams from the followed source
BatchHandler = Callable[[list[bytes], list[float]], None]
# (datagram, source, arrival) -> whether it was taken (then it has been handled, and the
# handler may have set the socket's `source` to follow that address from now on)
StrangerHandler = Callable[[bytes, Address, float], bool]


@dataclass
class SocketStats:
    datagrams: int = 0
    bytes: int = 0
    garbage: int = 0
    foreign: int = 0
    rtcp: int = 0


def enlarge_receive_buffer(sock: socket.socket, size: int = RECEIVE_BUFFER_BYTES) -> int:
    for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
        if option is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
            break
        except OSError:
            continue
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


class PolledUdpSocket:
    """One non-blocking UDP socket that follows one source address, `source`.

    Datagrams from `source` go to the drain's `handler`, the hot path. Those from any
    other address go to its `on_stranger`, which decides: it may take and handle the
    datagram, and may make its sender the new `source` (the RTP input does so only for
    valid RTP of the announced stream, `workers.inputs.rtp`). It counts what it refuses.
    """

    def __init__(self, stats: SocketStats):
        self.stats = stats
        self.source: Address | None = None
        self._sock: socket.socket | None = None
        self._stamped = False

    def bind(self, host: str, port: int) -> None:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((host, port))
            granted = enlarge_receive_buffer(sock)
            if granted < RECEIVE_BUFFER_BYTES:  # the kernel reports twice what it holds for data
                log.warning("udp_receive_buffer_small", port=port, granted_bytes=granted,
                            wanted_bytes=RECEIVE_BUFFER_BYTES,
                            hint="raise net.core.rmem_max (or run with CAP_NET_ADMIN) so bursts survive "
                                 "between two reads")
            if SO_TIMESTAMPNS is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                    self._stamped = True
                except OSError:
                    self._stamped = False
        except OSError:
            sock.close()
            raise
        self._sock = sock

    def drain(self, on_batch: BatchHandler, on_stranger: StrangerHandler) -> None:
        """Read every datagram waiting in the kernel, oldest first. Runs of datagrams from
        `source` go to `on_batch` as two lists (the hot path: no call per datagram); any
        other datagram goes to `on_stranger`, after the run before it, so order is kept."""
        sock = self._sock
        if sock is None:
            return
        now = time.monotonic()
        realtime_to_monotonic = now - time.time()
        source = self.source
        recvmsg = sock.recvmsg
        unpack = _TIMESPEC.unpack_from
        datagrams: list[bytes] = []
        arrivals: list[float] = []
        while True:
            try:
                data, ancillary, _flags, addr = recvmsg(MAX_DATAGRAM_BYTES, _ANCILLARY_BYTES)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # e.g. ICMP port unreachable reported on a later read: nothing to read
                break
            arrival = now
            if ancillary:  # SO_TIMESTAMPNS is the only one asked for
                stamp = ancillary[0][2]
                if len(stamp) >= _STAMP_BYTES:
                    seconds, nanoseconds = unpack(stamp)
                    arrival = seconds + nanoseconds * 1e-9 + realtime_to_monotonic
                    if arrival > now:  # noqa: PLR1730 (cheaper than a call to min, per datagram)
                        arrival = now
            if addr == source:
                datagrams.append(data)
                arrivals.append(arrival)
                continue
            if datagrams:
                self._hand_over(on_batch, datagrams, arrivals)
                datagrams, arrivals = [], []
            if on_stranger(data, addr, arrival):
                self.stats.datagrams += 1
                self.stats.bytes += len(data)
                source = self.source
        if datagrams:
            self._hand_over(on_batch, datagrams, arrivals)

    def _hand_over(self, on_batch: BatchHandler, datagrams: list[bytes], arrivals: list[float]) -> None:
        self.stats.datagrams += len(datagrams)
        self.stats.bytes += sum(map(len, datagrams))
        on_batch(datagrams, arrivals)

    def send(self, data: bytes, addr: Address) -> None:
        """Best effort (RTCP feedback): a full send buffer drops the datagram."""
        if self._sock is None:
            return
        try:
            self._sock.sendto(data, addr)
        except OSError:
            pass

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
