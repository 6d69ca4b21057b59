"""Headless Chromium driven over the DevTools protocol (a WebSocket, with aiohttp):
open a page at a given screen size, evaluate JavaScript in it, wait for a
condition, take a screenshot; JavaScript exceptions and console errors of the
page are collected. Chromium runs in its own session and profile, and its whole
process group is ended afterwards (tests/helpers/chromium.py's flags)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers.chromium import CHROMIUM, FLAGS, _end_group


class CdpError(Exception):
    pass


class Browser:
    def __init__(self) -> None:
        self._scratch = Path(tempfile.mkdtemp(prefix="recnode-cdp-"))
        self._process: asyncio.subprocess.Process | None = None
        self._session: aiohttp.ClientSession | None = None
        self._socket: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}
        self._reader: asyncio.Task | None = None
        self.problems: list[str] = []  # exceptions and console errors of every page

    async def __aenter__(self) -> Browser:
        profile = self._scratch / "profile"
        self._stderr = open(self._scratch / "chromium.stderr", "wb")
        self._process = await asyncio.create_subprocess_exec(
            CHROMIUM, *FLAGS, "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank",
            env={**os.environ, "TMPDIR": str(self._scratch)}, stdin=subprocess.DEVNULL,
            stdout=self._stderr, stderr=self._stderr, start_new_session=True)
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (active.exists() and len(active.read_text().split()) == 2):
            if self._process.returncode is not None or time.monotonic() > deadline:
                raise CdpError(f"chromium did not start: {self.stderr_tail()}")
            await asyncio.sleep(0.05)
        port, path = active.read_text().split()
        self._session = aiohttp.ClientSession()
        self._socket = await self._session.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=64 << 20)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        return self

    async def __aexit__(self, *exc) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._socket is not None:
            await self._socket.close()
        if self._session is not None:
            await self._session.close()
        if self._process is not None:
            await _end_group(self._process)
        self._stderr.close()
        shutil.rmtree(self._scratch, ignore_errors=True)

    def stderr_tail(self) -> str:
        path = self._scratch / "chromium.stderr"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    async def _read(self) -> None:
        async for message in self._socket:
            data = json.loads(message.data)
            if "id" in data:
                future = self._waiting.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
            elif data.get("method") == "Runtime.exceptionThrown":
                details = data["params"]["exceptionDetails"]
                self.problems.append(f"exception: {details.get('exception', {}).get('description', details['text'])}")
            elif data.get("method") == "Runtime.consoleAPICalled" and data["params"]["type"] == "error":
                self.problems.append("console.error: " + " ".join(
                    str(a.get("value", a.get("description", ""))) for a in data["params"]["args"]))

    async def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        message_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._waiting[message_id] = future
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        await self._socket.send_str(json.dumps(message))
        answer = await asyncio.wait_for(future, 30)
        if "error" in answer:
            raise CdpError(f"{method}: {answer['error']}")
        return answer["result"]

    async def page(self, width: int, height: int, mobile: bool = False) -> Page:
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        page = Page(self, attached["sessionId"])
        await page.send("Runtime.enable")
        await page.send("Page.enable")
        await page.send("Emulation.setDeviceMetricsOverride",
                        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})
        return page


class Page:
    def __init__(self, browser: Browser, session: str):
        self._browser = browser
        self._session = session

    async def send(self, method: str, params: dict | None = None) -> dict:
        return await self._browser.send(method, params, self._session)

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", {"url": url})
        await self.wait_for("document.readyState === 'complete'")

    async def evaluate(self, expression: str) -> Any:
        answer = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                      "awaitPromise": True})
        if "exceptionDetails" in answer:
            raise CdpError(f"{expression}: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 20.0) -> None:
        """Until the expression (or the promise it gives) is truthy in JavaScript; polled every 100 ms."""
        deadline = time.monotonic() + timeout
        while True:
            if await self.evaluate(f"Promise.resolve({expression}).then(Boolean)"):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"not within {timeout} s: {expression}")
            await asyncio.sleep(0.1)

    async def screenshot(self, path: Path) -> Path:
        data = await self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return path
