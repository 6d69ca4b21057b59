"""Free local ports for servers a test or benchmark starts (checked by binding)."""

from __future__ import annotations

import random
import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_udp_range(size: int = 200) -> tuple[int, int]:
    """A range of UDP ports nobody is bound to right now (checked by binding each)."""
    for _ in range(50):
        low = random.randrange(20000, 60000 - size) & ~1
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
