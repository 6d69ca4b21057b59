"""HTTP: the signed recording API (POST /?Action=...), RTP publishing, health."""

from __future__ import annotations

import hmac
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from engine import errors, models
from engine.auth import Authenticator
from engine.metrics import render_metrics
from engine.node import RecordingNode
from engine.pull_api import pull_routes

log = structlog.get_logger("api")

MAX_BODY_BYTES = 1 << 20
ACTIONS = ("StartRecord", "StopRecord", "DescribeRecordStatus", "DescribeTasks", "PauseRecord", "ResumeRecord")


def envelope(code: int, message: str, request_id: str, data: dict | None = None) -> web.Response:
    return web.json_response({"Code": code, "Message": message, "RequestId": request_id, "Data": data or {}})


class Api:
    def __init__(self, node: RecordingNode):
        self.node = node
        self.auth = Authenticator(node.config.app_id, node.config.server_secret)
        self.limits = node.config.limits
        self._actions: dict[str, Callable[[Any], Awaitable[dict]]] = {
            "StartRecord": self.start_record,
            "StopRecord": self.stop_record,
            "DescribeRecordStatus": self.describe_record_status,
            "DescribeTasks": self.describe_tasks,
            "PauseRecord": self.pause_record,
            "ResumeRecord": self.resume_record,
        }

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.add_routes([
            web.post("/", self.handle_action),
            web.get("/healthz", self.healthz),
            web.get("/readyz", self.readyz),
            web.get("/metrics", self.metrics),
            web.post("/rtp/{room_id}/{stream_id}", self.publish_rtp),
            web.delete("/rtp/resource/{resource_id}", self.unpublish),
            web.get("/rtp/resource/{resource_id}", self.stream_stats),
            web.post("/whip/{room_id}/{stream_id}", self.publish_whip),
            web.delete("/whip/resource/{resource_id}", self.unpublish),
            web.get("/whip/resource/{resource_id}", self.stream_stats),
            web.patch("/whip/resource/{resource_id}", self.no_trickle),
            web.options("/whip/{tail:.*}", self.whip_options),
            *pull_routes(self.node.pulls, self._check_token, self._ingest_error),
        ])
        app.middlewares.append(self._cors)
        return app

    @web.middleware
    async def _cors(self, request: web.Request, handler):
        """WHIP is called from pages on other origins: answer them, errors included."""
        try:
            response = await handler(request)
        except web.HTTPException as error:
            response = error
        if request.path.startswith("/whip/"):
            response.headers.update({
                "Access-Control-Allow-Origin": self.node.config.whip_cors_origin,
                "Access-Control-Allow-Methods": "POST, DELETE, PATCH, OPTIONS",
                "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
                "Access-Control-Expose-Headers": "Location, ETag, Link, Retry-After",
            })
        if isinstance(response, web.HTTPException):
            raise response
        return response

    async def whip_options(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers={"Accept-Post": "application/sdp"})

    async def no_trickle(self, request: web.Request) -> web.Response:
        return web.Response(status=405, text="trickle ICE is not supported: send a complete offer\n",
                            headers={"Allow": "DELETE, OPTIONS"})

    # the recording API
    async def handle_action(self, request: web.Request) -> web.Response:
        request_id = uuid.uuid4().hex
        action = request.query.get("Action", "")
        bound = log.bind(request_id=request_id, action=action)
        try:
            if not action:
                raise errors.ActionEmpty()
            handler = self._actions.get(action)
            if handler is None:
                raise errors.ActionNotSupported(f"Action {action[:64]!r} not supported")
            self.auth.verify(request.query)
            try:
                body = json.loads(await request.read() or b"{}")
            except (ValueError, UnicodeDecodeError):
                raise errors.BodyUnreadable() from None
            data = await handler(body)
        except errors.ApiError as error:
            code = errors.api_code(error)
            bound.info("api_error", code=code, message=error.message)
            return envelope(code, error.message, request_id)
        except web.HTTPException:
            raise
        except Exception:
            bound.exception("api_internal_error")
            return envelope(errors.api_code(errors.InternalError()), "internal error", request_id)
        bound.info("api_ok")
        return envelope(0, "success", request_id, data)

    async def start_record(self, body: Any) -> dict:
        parsed = models.parse_start_record(body, self.limits)
        busy = None
        if self.node.draining:
            busy = "node is draining"
        elif parsed.client_task_id is None:
            limit = self.node.capacity.task_refusal(self.node.tasks.active_count)
            busy = limit and f"node at capacity: {limit}"
        if busy:
            log.warning("start_record_refused", room_id=parsed.room_id, reason=busy)
            raise errors.NodeBusy(busy)
        task_id = await self.node.tasks.start_record(parsed)
        return {"TaskId": task_id}

    async def stop_record(self, body: Any) -> dict:
        await self.node.tasks.stop_record(models.parse_task_request(body).task_id)
        return {}

    async def describe_record_status(self, body: Any) -> dict:
        return await self.node.tasks.describe(models.parse_task_request(body).task_id)

    async def describe_tasks(self, body: Any) -> dict:
        return await self.node.tasks.describe_tasks(models.parse_describe_tasks(body, int(time.time() * 1000)))

    async def pause_record(self, body: Any) -> dict:
        await self.node.tasks.pause_record(models.parse_task_request(body).task_id)
        return {}

    async def resume_record(self, body: Any) -> dict:
        await self.node.tasks.resume_record(models.parse_task_request(body).task_id)
        return {}

    # health
    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        if self.node.ready and not self.node.draining:
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "draining" if self.node.draining else "starting"}, status=503)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=await render_metrics(self.node), content_type="text/plain",
                            headers={"X-Content-Type-Options": "nosniff"})

    # publishing: plain RTP (an SDP offer of what will be sent) and WHIP (RFC 9725)
    def _check_token(self, request: web.Request) -> None:
        token = self.node.config.ingest_token
        if not token:
            return
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise errors.IngestError(401, "a valid bearer token is required")

    @staticmethod
    def _ingest_error(error: errors.IngestError) -> web.Response:
        headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
        return web.Response(status=error.status, text=error.reason + "\n", headers=headers)

    async def publish_rtp(self, request: web.Request) -> web.Response:
        return await self._publish(request, "rtp")

    async def publish_whip(self, request: web.Request) -> web.Response:
        return await self._publish(request, "whip")

    async def _publish(self, request: web.Request, kind: str) -> web.Response:
        try:
            self._check_token(request)
            room_id = models.check_identifier(request.match_info["room_id"], "RoomId")
            stream_id = models.check_identifier(request.match_info["stream_id"], "StreamId")
            user_id = models.check_identifier(request.query.get("UserId", stream_id), "UserId")
            user_name = request.query.get("UserName", user_id)
            models.check_identifier(user_name, "UserName")
            if request.content_type != "application/sdp":
                raise errors.IngestError(415, "Content-Type must be application/sdp")
            try:
                sdp_text = (await request.read()).decode()
            except UnicodeDecodeError:
                raise errors.IngestError(400, "the SDP offer is not UTF-8") from None
            publish = self.node.publish_whip if kind == "whip" else self.node.publish_rtp
            stream = await publish(room_id, stream_id, user_id, user_name, sdp_text)
        except errors.InvalidParameter as error:
            return web.Response(status=400, text=error.message + "\n")
        except errors.IngestError as error:
            return self._ingest_error(error)
        # Absolute: FFmpeg's WHIP client does not resolve a relative Location.
        location = f"{request.scheme}://{request.host}/{kind}/resource/{stream.resource_id}"
        return web.Response(status=201, text=stream.answer, content_type="application/sdp",
                            headers={"Location": location})

    async def unpublish(self, request: web.Request) -> web.Response:
        try:
            self._check_token(request)
            await self.node.unpublish(request.match_info["resource_id"])
        except errors.IngestError as error:
            return self._ingest_error(error)
        return web.Response(status=200)

    async def stream_stats(self, request: web.Request) -> web.Response:
        try:
            self._check_token(request)
            stats = await self.node.stream_stats(request.match_info["resource_id"])
        except errors.IngestError as error:
            return self._ingest_error(error)
        return web.json_response(stats)
