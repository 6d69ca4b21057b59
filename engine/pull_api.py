"""HTTP for pulled streams (an extension of ours; `engine.pulls` does the work):

    POST   /pull/{RoomId}/{StreamId}?UserId=U   JSON {"Url", "Kind", "BearerToken", "Transport"}
           -> 201 Created, Location: /pull/source/<id>, body: the source's state
    GET    <Location>                            the source's state and counters
    DELETE <Location>                            ends it (its stream leaves the room)

Guarded by the ingest token like WHIP and RTP publishing. Errors are plain text with
the status (400 naming the field, 401, 404, 409 the stream id is taken, 503 busy).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from aiohttp import web

from engine import errors, models
from engine.pulls import PullSources, parse_pull

MAX_BODY_BYTES = 16 * 1024

TokenCheck = Callable[[web.Request], None]  # raises IngestError(401)
IngestAnswer = Callable[[errors.IngestError], web.Response]


def pull_routes(pulls: PullSources, check_token: TokenCheck, ingest_error: IngestAnswer) -> list[web.RouteDef]:
    async def create(request: web.Request) -> web.Response:
        try:
            check_token(request)
            room_id = models.check_identifier(request.match_info["room_id"], "RoomId")
            stream_id = models.check_identifier(request.match_info["stream_id"], "StreamId")
            user_id = models.check_identifier(request.query.get("UserId", stream_id), "UserId")
            raw = await request.content.read(MAX_BODY_BYTES + 1)
            if len(raw) > MAX_BODY_BYTES:
                raise errors.InvalidParameter("the body is larger than 16 KiB")
            try:
                body = json.loads(raw or b"{}")
            except (ValueError, UnicodeDecodeError):
                raise errors.InvalidParameter("the body is not JSON") from None
            source = await pulls.create(parse_pull(room_id, stream_id, user_id, body))
        except errors.InvalidParameter as error:
            return web.Response(status=400, text=error.message + "\n")
        except errors.IngestError as error:
            return ingest_error(error)
        location = f"{request.scheme}://{request.host}/pull/source/{source.source_id}"
        return web.json_response(source.view(), status=201, headers={"Location": location})

    async def show(request: web.Request) -> web.Response:
        try:
            check_token(request)
            source = pulls.get(request.match_info["source_id"])
        except errors.IngestError as error:
            return ingest_error(error)
        return web.json_response(source.view(await pulls.stats(source)))

    async def delete(request: web.Request) -> web.Response:
        try:
            check_token(request)
            source = await pulls.delete(request.match_info["source_id"])
        except errors.IngestError as error:
            return ingest_error(error)
        return web.json_response(source.view())

    return [
        web.post("/pull/{room_id}/{stream_id}", create),
        web.get("/pull/source/{source_id}", show),
        web.delete("/pull/source/{source_id}", delete),
    ]
