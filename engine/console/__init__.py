"""The web console at /console: plain HTML and JavaScript served by the node,
talking only to the node's own /console/api (below), never to another host.

Login: the AppId's ServerSecret, or the `--console-token`, posted once; the answer
is a session cookie (HttpOnly, SameSite=Strict, path /console) that carries its
expiry and an HMAC of it with a key derived from the ServerSecret, so the node
keeps no session state and a secret rotation ends every session. Without a valid
session every /console/api call answers 401; the page itself then shows the login.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from engine import defaults, errors
from engine.console.overview import overview

if TYPE_CHECKING:
    from engine.node import RecordingNode

STATIC = Path(__file__).parent / "static"
COOKIE = "recnode_console"
_KEY_LABEL = b"recnode console sessions v1"
ACTIONS = ("stop", "pause", "resume")


class Console:
    def __init__(self, node: RecordingNode):
        self._node = node
        self._key = hmac.new(node.config.server_secret.encode(), _KEY_LABEL, hashlib.sha256).digest()
        self._tokens = tuple(t for t in (node.config.server_secret, node.config.console_token) if t)

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.get("/console", self.page),
            web.get("/console/", self.page),
            web.static("/console/static", STATIC),
            web.post("/console/login", self.login),
            web.post("/console/logout", self.logout),
            web.get("/console/api/overview", self.api_overview),
            web.post("/console/api/tasks/{task_id}/{action}", self.api_task_action),
        ]

    async def page(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html", headers={
            "Cache-Control": "no-cache",
            # only its own scripts and the node's media: nothing from other hosts
            "Content-Security-Policy": "default-src 'self'; media-src 'self' blob:; img-src 'self' data:; "
                                       "worker-src 'self' blob:; style-src 'self'; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff",
        })

    # sessions
    def _session_value(self, expires: int) -> str:
        return f"{expires}.{hmac.new(self._key, str(expires).encode(), hashlib.sha256).hexdigest()}"

    def _logged_in(self, request: web.Request) -> bool:
        expires, _, _ = request.cookies.get(COOKIE, "").partition(".")
        if not (expires.isascii() and expires.isdigit()) or int(expires) < time.time():
            return False
        return hmac.compare_digest(request.cookies[COOKIE].encode(), self._session_value(int(expires)).encode())

    async def login(self, request: web.Request) -> web.Response:
        try:
            given = str((await request.json()).get("token", ""))
        except (ValueError, AttributeError):
            given = ""
        if not any(hmac.compare_digest(given.encode(), token.encode()) for token in self._tokens):
            await asyncio.sleep(defaults.CONSOLE_LOGIN_FAILURE_DELAY_S)  # slows guessing down
            return web.json_response({"error": "wrong ServerSecret or console token"}, status=401)
        response = web.json_response({"ok": True})
        response.set_cookie(COOKIE, self._session_value(int(time.time() + defaults.CONSOLE_SESSION_S)),
                            max_age=defaults.CONSOLE_SESSION_S, path="/console", httponly=True,
                            samesite="Strict", secure=request.secure)
        return response

    async def logout(self, request: web.Request) -> web.Response:
        response = web.json_response({"ok": True})
        response.del_cookie(COOKIE, path="/console")
        return response

    # what the page shows and does
    async def api_overview(self, request: web.Request) -> web.Response:
        if not self._logged_in(request):
            return web.json_response({"error": "log in"}, status=401)
        room = request.query.get("room", "").strip() or None
        status = request.query.get("status", "all")
        return web.json_response(await overview(self._node, room, status), headers={"Cache-Control": "no-store"})

    async def api_task_action(self, request: web.Request) -> web.Response:
        if not self._logged_in(request):
            return web.json_response({"error": "log in"}, status=401)
        task_id, action = request.match_info["task_id"], request.match_info["action"]
        if action not in ACTIONS:
            return web.json_response({"error": f"unknown action {action[:32]!r}"}, status=404)
        act = {"stop": self._node.stop_record, "pause": self._node.pause_record,
               "resume": self._node.resume_record}[action]
        try:
            await act(task_id)
        except errors.ApiError as error:
            return web.json_response({"Code": errors.api_code(error), "Message": error.message}, status=409)
        return web.json_response({"Code": 0, "Message": "success"})
