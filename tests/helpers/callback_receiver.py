"""A real HTTP receiver of status callbacks on 127.0.0.1, checking each signature."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def expected_signature(secret: str, timestamp: str, nonce: str) -> str:
    return hashlib.sha1("".join(sorted([secret, timestamp, nonce])).encode()).hexdigest()


@dataclass
class Received:
    body: dict
    at: float  # monotonic
    signature_ok: bool
    answered: int


@dataclass
class CallbackReceiver:
    secret: str
    received: list[Received] = field(default_factory=list)
    fail_next: dict[int, int] = field(default_factory=dict)  # event_type -> how many times to answer 500
    refusing: set[str] = field(default_factory=set)  # task ids whose every callback is answered 503

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                ok = body.get("signature") == expected_signature(receiver.secret, body.get("timestamp", ""),
                                                                  body.get("nonce", ""))
                status = 200
                with receiver._lock:
                    if body.get("task_id") in receiver.refusing:
                        status = 503
                    elif receiver.fail_next.get(body.get("event_type"), 0) > 0:
                        receiver.fail_next[body["event_type"]] -= 1
                        status = 500
                    receiver.received.append(Received(body, time.monotonic(), ok, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/callback"

    def close(self) -> None:
        self._server.shutdown()

    def of_task(self, task_id: str, delivered_only: bool = True) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.body["task_id"] == task_id and (r.answered == 200 or not delivered_only)]

    def events(self, task_id: str) -> list[int]:
        return [r.body["event_type"] for r in self.of_task(task_id)]

    def wait_for(self, task_id: str, predicate, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.of_task(task_id)
            if predicate([r.body["event_type"] for r in got]):
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"callbacks of {task_id}: {[r.body for r in got]}")
            time.sleep(0.05)
