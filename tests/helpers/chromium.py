"""Headless Chromium publishing its fake camera and microphone over WHIP, from a
page (www/whip_publish.html) served by a small aiohttp server on 127.0.0.1, on
another port than the node's, so the browser's CORS rules apply for real.

Chromium runs as a plain subprocess in its own session (its whole process group
is ended afterwards); its stderr goes to a file. The page reports what it did
(offer, answer, getStats() of its senders, errors) to the server."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import subprocess
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from testkit.ports import free_port

WWW = Path(__file__).parent / "www"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

FLAGS = (
    "--headless=new",
    "--no-sandbox",  # tests run as root here
    "--disable-gpu",
    # no network beyond 127.0.0.1: without these Chromium keeps calling Google's hosts
    "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream=fps=30",  # a synthetic camera (640x480 here) and microphone
    "--use-fake-ui-for-media-stream",  # getUserMedia granted without a prompt
    "--allow-loopback-in-peer-connection",  # ICE host candidates on 127.0.0.1, where the node listens
    "--disable-features=WebRtcHideLocalIpsWithMdns",  # real addresses, not mDNS .local names
)


def available() -> bool:
    return os.access(CHROMIUM, os.X_OK)


@dataclass
class PageRun:
    """What the page reported, plus where Chromium's stderr went."""

    stderr_path: Path
    offer: str | None = None
    answer: str | None = None
    # {"published": seconds, "video": {outbound-rtp}, "audio": {...}, "path": {"local": .., "remote": ..}}
    stats: dict | None = None
    frames: dict | None = None  # {"video": [{"type": "key"|"delta", "data": base64}], "audio": [...]}
    done: dict | None = None
    errors: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)

    def outbound(self, kind: str) -> dict:
        return self.stats[kind]

    def frame_type(self, kind: str, index: int) -> str:
        """"key" or "delta" for video, "audio" for audio."""
        return self.frames[kind][index]["type"]

    def sent(self, kind: str) -> list[bytes]:
        """The encoded frames (video: Annex-B access units; audio: Opus packets) the sender sent."""
        return [base64.b64decode(f["data"]) for f in self.frames[kind]]

    def describe(self) -> str:
        """For assertion messages: the page's own reports, then the end of Chromium's stderr."""
        lines = self.stderr_path.read_text(errors="replace").splitlines() if self.stderr_path.exists() else []
        stderr = "\n".join(line for line in lines if "dbus" not in line)[-3000:]  # no D-Bus here: noise
        return (f"page errors: {self.errors}\npage log: {self.logs}\nstats: {self.stats}\n"
                f"offer:\n{self.offer}\nanswer:\n{self.answer}\nchromium stderr ({self.stderr_path}):\n{stderr}")


class _PageServer:
    def __init__(self, run: PageRun):
        self.run = run
        self.finished = asyncio.Event()
        app = web.Application(client_max_size=256 << 20)
        app.router.add_post("/report", self.report)
        app.router.add_static("/", WWW)
        self.runner = web.AppRunner(app, access_log=None)
        self.port = free_port()

    async def start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def report(self, request: web.Request) -> web.Response:
        message = await request.json()
        kind, data = message["kind"], message["data"]
        if kind in ("error", "log"):
            (self.run.errors if kind == "error" else self.run.logs).append(data)
        else:
            setattr(self.run, kind, data)
        if kind in ("error", "done"):
            self.finished.set()
        return web.Response(status=204)


async def _end_group(process: asyncio.subprocess.Process) -> None:
    """SIGTERM to Chromium's process group, then SIGKILL to whatever of it is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            await asyncio.wait_for(process.wait(), 5)
        except asyncio.TimeoutError:
            pass


async def _publish(whip_url: str, tmp_path: Path, seconds: float, codec: str | None, timeout: float) -> PageRun:
    run = PageRun(tmp_path / "chromium.stderr")
    server = _PageServer(run)
    await server.start()
    query = {"whip": whip_url, "seconds": str(seconds), **({"codec": codec} if codec else {})}
    page = f"http://127.0.0.1:{server.port}/whip_publish.html?{urllib.parse.urlencode(query)}"
    # A profile and a TMPDIR of its own, removed afterwards (Chromium leaves its singleton
    # directory behind); short, as the socket in it must fit a sun_path.
    scratch = Path(tempfile.mkdtemp(prefix="recnode-chromium-"))
    with open(run.stderr_path, "wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            CHROMIUM, *FLAGS, f"--user-data-dir={scratch / 'profile'}", page,
            env={**os.environ, "TMPDIR": str(scratch)},
            stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, start_new_session=True)
    try:
        finished = asyncio.create_task(server.finished.wait())
        exited = asyncio.create_task(process.wait())
        await asyncio.wait({finished, exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for task in (finished, exited):
            task.cancel()
        if not server.finished.is_set():
            run.errors.append("chromium exited early" if process.returncode is not None
                              else f"the page did not finish within {timeout} s")
    finally:
        await _end_group(process)
        await server.runner.cleanup()
        shutil.rmtree(scratch, ignore_errors=True)
    return run


def publish(whip_url: str, tmp_path: Path, seconds: float = 5.0, codec: str | None = None,
            timeout: float = 30.0) -> PageRun:
    """Open the page in headless Chromium and let it publish for `seconds`; returns
    once it has DELETEd its WHIP resource, reported an error, or timed out."""
    return asyncio.run(_publish(whip_url, tmp_path, seconds, codec, timeout))

