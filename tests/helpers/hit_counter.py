"""A real HTTP server that counts the requests it gets (any method) and answers each
with one status: 200, or a redirect to `location`, or 404 (a web server that is not a
bucket)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HitCounter:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, status: int = 200, location: str = ""):
        counter = self
        self.hits = 0
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                with counter._lock:
                    counter.hits += 1
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _answer  # noqa: N815

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self.host, self.port = self._server.server_address[:2]
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}/"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
