"""The test's side of WHIP (RFC 9725), for publishers under test: see ``WhipEndpoint``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web


class WhipEndpoint:
    """``POST /whip/<name>`` with ``application/sdp`` calls ``on_offer(sdp)`` and answers
    ``201 Created`` with a ``Location`` and the SDP answer (406 when it raises
    ValueError); ``DELETE <Location>`` calls ``on_delete``."""

    def __init__(self, on_offer: Callable[[str], Awaitable[str]], on_delete: Callable[[], None] | None = None):
        self._on_offer = on_offer
        self._on_delete = on_delete
        self._runner = None
        self.url = ""
        self.offers: list[str] = []
        self.deletes = 0
        self.errors: list[str] = []

    async def start(self, name: str = "test") -> str:
        app = web.Application()
        app.router.add_post("/whip/{name}", self._post)
        app.router.add_delete("/whip/{name}/resource", self._delete)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/whip/{name}"
        return self.url

    async def _post(self, request):
        offer = await request.text()
        self.offers.append(offer)
        try:
            answer = await self._on_offer(offer)
        except ValueError as error:
            self.errors.append(str(error))
            return web.Response(status=406, text=str(error))
        return web.Response(status=201, text=answer, content_type="application/sdp",
                            headers={"Location": f"{request.path}/resource"})

    async def _delete(self, request):
        self.deletes += 1
        if self._on_delete is not None:
            self._on_delete()
        return web.Response(status=200)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
