"""POST /pull bodies, and the node as a WHEP client against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web
from hypothesis import example, given, settings
from hypothesis import strategies as st

from contract.codes import InputKind
from engine import errors, whep_client
from engine.pulls import parse_pull

SECRET = "tok-Secret-0a9"


def test_a_valid_body_and_its_defaults():
    whep = parse_pull("r", "s", "u", {"Url": "https://sfu.example/whep/x", "Kind": "whep", "BearerToken": SECRET})
    assert (whep.kind, whep.bearer_token, whep.transport) == (InputKind.WHEP, SECRET, "tcp")
    rtsp = parse_pull("r", "s", "u", {"Url": f"rtsp://admin:{SECRET}@10.0.0.7:554/h264", "Kind": "rtsp"})
    assert (rtsp.kind, rtsp.transport) == (InputKind.RTSP, "tcp")
    assert SECRET not in repr(whep) + repr(rtsp)  # URL and token never in a repr (so never in a log line)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["Url", "Kind", "BearerToken", "Transport", "Other"]),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=40),
                                 st.sampled_from(["whep", "rtsp", "tcp", "udp", "http://127.0.0.1:1/w",
                                                  "rtsp://127.0.0.1/c", "rtsp://[::1", "http://h:99999/"]))))
@example({"Url": "rtsp://127.0.0.1/c", "Kind": "rtsp", "Transport": "whep"})
@example({"Url": "http://127.0.0.1:1/w", "Kind": "whep", "Transport": "tcp"})
def test_any_body_is_a_request_or_an_error_naming_a_field(body):
    try:
        request = parse_pull("r", "s", "u", body)
    except errors.InvalidParameter as error:
        assert error.message.split(" ")[0] in ("Url", "Kind", "BearerToken", "Transport"), error.message
    else:
        assert request.kind in (InputKind.WHEP, InputKind.RTSP) and request.transport in ("tcp", "udp")


async def _serve(routes) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def _run(coroutine):
    return asyncio.run(coroutine)


async def _allow(url: str) -> None:
    return None


def test_redirects_are_followed_and_checked_and_the_resource_is_kept():
    seen: list[tuple[str, str]] = []

    async def scenario():
        async def record(request):
            seen.append((request.path, request.headers.get("Authorization", "")))

        async def first(request):
            await record(request)
            raise web.HTTPTemporaryRedirect("/second")

        async def second(request):
            await record(request)
            assert await request.text() == "offer"
            return web.Response(status=201, text="answer", content_type="application/sdp",
                                headers={"Location": "session/1"})

        async def delete(request):
            await record(request)
            return web.Response(status=200)

        runner, base = await _serve([web.post("/first", first), web.post("/second", second),
                                     web.delete("/session/1", delete)])
        checked: list[str] = []

        async def check(url):
            checked.append(url)

        try:
            async with aiohttp.ClientSession() as http:
                session = await whep_client.post_offer(http, base + "/first", "offer", SECRET, check)
                assert session.answer == "answer" and session.resource_url == base + "/session/1"
                await whep_client.delete_resource(http, session.resource_url, SECRET, check)
        finally:
            await runner.cleanup()
        return checked, base

    checked, base = _run(scenario())
    assert checked == [base + "/first", base + "/second", base + "/session/1"]  # every target before use
    assert seen == [("/first", f"Bearer {SECRET}"), ("/second", f"Bearer {SECRET}"),
                    ("/session/1", f"Bearer {SECRET}")]


@pytest.mark.parametrize("answer, expected", [
    (lambda r: web.Response(status=200, text="a", content_type="application/sdp"), "answered 200 OK"),
    (lambda r: web.Response(status=201, text="a", content_type="text/html"), "with text/html, not application/sdp"),
    (lambda r: web.Response(status=401, text=SECRET), "answered 401 Unauthorized"),
    (lambda r: web.Response(status=307), "redirected (307) without a Location"),
    (lambda r: web.HTTPTemporaryRedirect("/w"), "redirected more than 3 times"),
    (lambda r: web.HTTPFound("/w"), "answered 302 Found"),  # only 307 / 308 keep the POST
])
def test_unusable_answers_are_named_without_the_url(answer, expected):
    async def scenario():
        async def handler(request):
            response = answer(request)
            if isinstance(response, web.HTTPException):
                raise response  # aiohttp's way for its exception-responses (returning one is deprecated)
            return response

        runner, base = await _serve([web.post("/w", handler)])
        try:
            async with aiohttp.ClientSession() as http:
                with pytest.raises(whep_client.WhepError) as raised:
                    await whep_client.post_offer(http, base + "/w", "offer", SECRET, _allow)
        finally:
            await runner.cleanup()
        return str(raised.value), base

    message, base = _run(scenario())
    assert expected in message and base not in message and SECRET not in message


def test_a_refused_redirect_target_is_not_contacted(closed_port):
    async def scenario():
        async def handler(request):
            raise web.HTTPTemporaryRedirect("http://169.254.169.254/latest")

        async def check(url):
            if "169.254" in url:
                raise whep_client.WhepError("the WHEP server's redirect points into a network this node refuses")

        runner, base = await _serve([web.post("/w", handler)])
        try:
            async with aiohttp.ClientSession() as http:
                with pytest.raises(whep_client.WhepError, match="refuses"):
                    await whep_client.post_offer(http, base + "/w", "offer", "", check)
                with pytest.raises(whep_client.WhepError, match="^WHEP request failed: cannot connect: Connection "
                                                               "refused$"):
                    await whep_client.post_offer(http, f"http://127.0.0.1:{closed_port}/w", "o", "", _allow)
        finally:
            await runner.cleanup()

    _run(scenario())
