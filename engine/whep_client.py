"""The node as a WHEP client (draft-ietf-wish-whep): POST our offer, keep the session's
resource URL, DELETE it when the session ends.

Redirects (307 / 308, as WHEP and WHIP servers use them to balance load) are followed by
hand, each target checked by the caller's outbound-address policy before anything is sent
to it; so is the resource URL before the DELETE. The bearer token goes with every request
to a target the policy accepts. Error messages name the status or the failure, never a URL
(it may hold credentials) or the token.
"""

from __future__ import annotations

import asyncio
import os
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import structlog

from engine import defaults

log = structlog.get_logger("whep")

REDIRECTS = (307, 308)  # the ones that keep the method and body (RFC 9110 15.4)
MAX_ANSWER_BYTES = 256 * 1024

UrlCheck = Callable[[str], Awaitable[None]]  # raises WhepError when the URL may not be reached


class WhepError(Exception):
    """The server could not be used; the message is safe to show."""


@dataclass(frozen=True)
class WhepSession:
    answer: str = field(repr=False)
    resource_url: str | None = field(default=None, repr=False)


def _headers(token: str, **extra: str) -> dict[str, str]:
    return {**extra, **({"Authorization": f"Bearer {token}"} if token else {})}


def _failure(error: BaseException) -> str:
    """What went wrong, without the host or URL aiohttp puts in its messages."""
    if isinstance(error, TimeoutError | asyncio.TimeoutError):
        return f"no answer within {defaults.WHEP_HTTP_TIMEOUT_S:g} s"
    if isinstance(error, aiohttp.ClientConnectorError):  # its strerror names the address: keep the errno's text
        errno = error.os_error.errno
        return f"cannot connect: {os.strerror(errno) if errno else type(error.os_error).__name__}"
    return type(error).__name__


async def post_offer(session: aiohttp.ClientSession, url: str, offer: str, token: str, check: UrlCheck) -> WhepSession:
    timeout = aiohttp.ClientTimeout(total=defaults.WHEP_HTTP_TIMEOUT_S)
    for _ in range(defaults.WHEP_MAX_REDIRECTS + 1):
        await check(url)
        try:
            async with session.post(url, data=offer.encode(), allow_redirects=False, timeout=timeout,
                                    headers=_headers(token, **{"Content-Type": "application/sdp"})) as reply:
                if reply.status in REDIRECTS:
                    location = reply.headers.get("Location")
                    if not location:
                        raise WhepError(f"the WHEP server redirected ({reply.status}) without a Location")
                    url = urllib.parse.urljoin(url, location)
                    continue
                if reply.status != 201:
                    raise WhepError(f"the WHEP server answered {reply.status} {reply.reason or ''}".rstrip())
                if reply.content_type != "application/sdp":
                    raise WhepError(f"the WHEP server answered with {reply.content_type or 'no content type'}, "
                                    f"not application/sdp")
                body = await reply.content.read(MAX_ANSWER_BYTES + 1)
                if len(body) > MAX_ANSWER_BYTES:
                    raise WhepError("the WHEP server's answer is larger than 256 KiB")
                location = reply.headers.get("Location")
                resource = urllib.parse.urljoin(url, location) if location else None
                return WhepSession(body.decode("utf-8", "replace"), resource)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise WhepError(f"WHEP request failed: {_failure(error)}") from None
    raise WhepError(f"the WHEP server redirected more than {defaults.WHEP_MAX_REDIRECTS} times")


async def delete_resource(session: aiohttp.ClientSession, resource_url: str, token: str, check: UrlCheck) -> None:
    """End the session on the server; a failure is logged (it ends on its own when ICE
    consent stops) and never raised."""
    try:
        await check(resource_url)
        async with session.delete(resource_url, headers=_headers(token),
                                  timeout=aiohttp.ClientTimeout(total=defaults.WHEP_HTTP_TIMEOUT_S)) as reply:
            if reply.status >= 300:
                log.warning("whep_delete_refused", status=reply.status)
    except WhepError as error:
        log.warning("whep_delete_skipped", reason=str(error))
    except (aiohttp.ClientError, TimeoutError) as error:
        log.warning("whep_delete_failed", reason=_failure(error))
