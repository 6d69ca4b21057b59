"""Free local ports for servers a test or benchmark starts (checked by binding)."""

from __future__ import annotations

import os
import random
import socket

UDP_LOW, UDP_HIGH = 20000, 60000  # where UDP port ranges are picked


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _udp_slice() -> tuple[int, int]:
    """This process's share of UDP_LOW..UDP_HIGH: all of it, or under pytest-xdist one
    slice per worker, so that nodes in parallel workers never pick overlapping ranges
    (a range is only checked free when picked; the node binds its ports later)."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if not worker.startswith("gw") or not count.isdigit():
        return UDP_LOW, UDP_HIGH
    width = (UDP_HIGH - UDP_LOW) // int(count)
    low = UDP_LOW + int(worker[2:]) * width
    return low, low + width


def free_udp_range(size: int = 200) -> tuple[int, int]:
    """A range of UDP ports nobody is bound to right now (checked by binding each)."""
    slice_low, slice_high = _udp_slice()
    for _ in range(50):
        low = random.randrange(slice_low, slice_high - size) & ~1
        sockets = []
        try:
            for port in range(low, low + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return low, low + size - 1
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free UDP port range")
