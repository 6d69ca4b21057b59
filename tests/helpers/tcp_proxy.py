"""A TCP proxy on 127.0.0.1 in front of a real server, to give it outages of two kinds.

- ``refuse()``: every open connection is reset (RST) and new ones are refused
  (the listening socket is closed), as by a server that went down.
- ``hang()``: connections stay open and new ones are accepted, but nothing is
  answered: what a client sends is read and thrown away, as by a server that
  stopped responding (or a black-holing middlebox). A client that gives up on
  such a connection is counted in ``gave_up``.
- ``restore()``: connections held by a hang are reset (their HTTP exchange is
  broken) and new ones reach the server again, on the same port.
"""

from __future__ import annotations

import socket
import struct
import threading

BUFFER = 1 << 16


class TcpProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.mode = "forward"
        self.gave_up = 0  # connections the client closed while held by a hang
        self.reset = 0  # connections reset by refuse() or restore()
        self.connections = 0  # accepted, in all
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()  # client-side sockets
        self._held: set[socket.socket] = set()  # client-side sockets a hang took
        self._listener = self._listen(0)
        self.port = self._listener.getsockname()[1]

    @property
    def open_connections(self) -> int:
        """Connections open now (the S3 server here closes each after its answer: requests in flight)."""
        with self._lock:
            return len(self._open)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _listen(self, port: int) -> socket.socket:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return listener

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by refuse() or close()
            with self._lock:
                self.connections += 1
                self._open.add(client)
                if self.mode == "hang":
                    self._held.add(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = None
        try:
            if client not in self._held:
                upstream = socket.create_connection(self.upstream, timeout=5)
                upstream.settimeout(None)
                threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()
            self._pump(client, upstream, True)
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                if s is not None:
                    s.close()
            with self._lock:
                self._open.discard(client)
                self._held.discard(client)

    def _pump(self, source: socket.socket, sink: socket.socket | None, from_client: bool) -> None:
        client = source if from_client else sink
        try:
            while data := source.recv(BUFFER):
                with self._lock:
                    if self.mode == "hang":
                        self._held.add(client)
                    held = client in self._held
                if not held and sink is not None:
                    sink.sendall(data)
            with self._lock:
                if from_client and client in self._held and self.mode == "hang":
                    self.gave_up += 1
        except OSError:
            pass
        finally:
            _shut(sink if from_client else client)  # wakes the other direction; _serve closes both

    def _reset(self, sockets) -> None:
        """Reset connections: closed with SO_LINGER 0 (an RST, not a FIN) once their pump wakes up."""
        for s in list(sockets):
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.shutdown(socket.SHUT_RD)  # the pump's recv returns: it ends, and _serve closes
            except OSError:
                pass
            self.reset += 1

    def refuse(self) -> None:
        with self._lock:
            self.mode = "refuse"
            self._close_listener()
            self._reset(self._open)

    def _close_listener(self) -> None:
        _shut(self._listener)  # wakes the blocked accept() (a bare close() would leave the port listening)
        self._listener.close()

    def hang(self) -> None:
        with self._lock:
            self.mode = "hang"

    def restore(self) -> None:
        with self._lock:
            previous, self.mode = self.mode, "forward"
            self._reset(self._held)
        if previous == "refuse":
            self._listener = self._listen(self.port)

    def close(self) -> None:
        with self._lock:
            self.mode = "closed"
            self._close_listener()
            self._reset(self._open)


def _shut(s: socket.socket | None) -> None:
    if s is not None:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
