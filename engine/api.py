"""HTTP: the signed recording API (POST /?Action=...), RTP publishing, health."""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog
from aiohttp import web

from engine import defaults, errors, metrics, models
from engine.admission import NodeState
from engine.auth import Authenticator, NonceCache, NonceStore
from engine.config import NodeConfig
from engine.console import Console
from engine.placement import Redirect
from engine.pull_api import pull_routes
from engine.pulls import PullSources
from engine.recordings_http import RecordingFiles
from engine.rooms import PublishedStream
from engine.signed_urls import RecordingUrls

log = structlog.get_logger("api")

SUCCEED = "succeed"  # the hosted service's Message for Code 0


class RecordingService(Protocol):
    """All the HTTP API needs of the node (engine.node.RecordingNode)."""

    config: NodeConfig
    store: NonceStore  # used signature nonces outlive a restart
    pulls: PullSources  # streams the node subscribes to

    @property
    def state(self) -> NodeState: ...

    async def start_record(self, request: models.StartRecordRequest) -> str: ...

    async def stop_record(self, task_id: str) -> None: ...

    async def pause_record(self, task_id: str) -> None: ...

    async def resume_record(self, task_id: str) -> None: ...

    async def take_snapshot(self, task_id: str) -> None: ...

    async def describe_record_status(self, task_id: str) -> dict: ...

    async def describe_tasks(self, request: models.DescribeTasksRequest) -> dict: ...

    async def publish_rtp(self, room_id: str, stream_id: str, user_id: str, user_name: str,
                          sdp_text: str, announcer: str = "") -> PublishedStream:
        """`announcer`: the publisher's address (with --rtp-pin-source its only source host)."""

    async def publish_whip(self, room_id: str, stream_id: str, user_id: str, user_name: str,
                           sdp_text: str) -> PublishedStream: ...

    async def redirect_publish(self, kind: str, room_id: str, stream_id: str) -> Redirect | None:
        """The node of the fleet this publish should go to instead (engine.placement), or None."""

    async def unpublish(self, resource_id: str) -> None: ...

    async def stream_stats(self, resource_id: str) -> dict[str, Any]: ...

    async def metrics(self) -> bytes:
        """/metrics in the Prometheus text format."""


API_CODE = web.ResponseKey("recnode_api_code", int)  # an API answer's Code, for the access log and the metrics
QUIET_PATHS = ("/healthz", "/readyz", "/metrics")  # polled by machines: logged at debug level


def envelope(code: int, message: str, request_id: str, data: dict | None = None) -> web.Response:
    response = web.json_response({"Code": code, "Message": message, "RequestId": request_id, "Data": data or {}})
    response[API_CODE] = code
    return response


def publish_outcome(status: int, reason: str) -> str:
    """A refused publish's reason as a bounded metric label."""
    if status == 503:
        if reason.startswith("node at capacity"):
            return "capacity"
        return "draining" if "draining" in reason else "unavailable"
    return {400: "invalid_offer", 401: "unauthorized", 406: "unsupported_offer", 409: "already_published",
            415: "not_sdp"}.get(status, str(status))


class Api:
    def __init__(self, node: RecordingService, console: Console | None = None):
        self.node = node
        self.console = console
        self.config = node.config
        self.auth = Authenticator(self.config.app_id, self.config.server_secret, NonceCache(store=node.store))
        self.limits = self.config.limits
        self._actions: dict[str, Callable[[Any], Awaitable[dict]]] = {
            "StartRecord": self.start_record,
            "StopRecord": self.stop_record,
            "DescribeRecordStatus": self.describe_record_status,
            "DescribeTasks": self.describe_tasks,
            "PauseRecord": self.pause_record,
            "ResumeRecord": self.resume_record,
            "TakeSnapshot": self.take_snapshot,
        }

    def app(self) -> web.Application:
        app = web.Application(client_max_size=defaults.API_MAX_BODY_BYTES)
        app.on_startup.append(self._load_nonces)
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
            *RecordingFiles(self.config.storage_root, RecordingUrls.for_config(self.config)).routes(),
        ])
        if self.console is not None:
            app.add_routes(self.console.routes())
        app.middlewares.append(self._access_log)
        app.middlewares.append(self._cors)
        return app

    @web.middleware
    async def _access_log(self, request: web.Request, handler):
        """One line per request (never its query: signatures and tokens live there),
        the API's metrics, and any exception a handler let through as a JSON event."""
        started = time.perf_counter()
        status, code = 500, None
        try:
            response = await handler(request)
            status, code = response.status, response.get(API_CODE)
            return response
        except web.HTTPException as error:
            status = error.status
            raise
        except Exception:
            log.exception("http_handler_failed", method=request.method, path=request.path)
            return web.Response(status=500, text="internal error\n")
        finally:
            elapsed = time.perf_counter() - started
            action = request.query.get("Action", "") if request.path == "/" and request.method == "POST" else ""
            if action:
                label = metrics.api_action_label(action)
                metrics.API_REQUESTS.labels(label, str(code if code is not None else status)).inc()
                metrics.API_LATENCY.labels(label).observe(elapsed)
            fields = {"method": request.method, "path": request.path, "status": status,
                      "duration_ms": round(elapsed * 1000, 2), "client": request.remote}
            if action:
                fields.update(action=action[:64], code=code)
            (log.debug if request.path in QUIET_PATHS else log.info)("http_request", **fields)

    @web.middleware
    async def _cors(self, request: web.Request, handler):
        """WHIP is called from pages on other origins: answer them, errors included."""
        try:
            response = await handler(request)
        except web.HTTPException as error:
            response = error
        if request.path.startswith("/whip/"):
            response.headers.update({
                "Access-Control-Allow-Origin": self.config.whip_cors_origin,
                "Access-Control-Allow-Methods": "POST, DELETE, PATCH, OPTIONS",
                "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
                "Access-Control-Expose-Headers": "Location, ETag, Link, Retry-After",
            })
        if isinstance(response, web.HTTPException):
            raise response
        return response

    async def _load_nonces(self, app: web.Application) -> None:
        await self.auth.nonces.load(time.time())

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
            await self.auth.verify(request.query)
            try:
                raw = await request.read()
            except web.HTTPRequestEntityTooLarge:
                # Answered in the envelope (HTTP 200) like every other API error.
                raise errors.BodyUnreadable(
                    f"request body larger than {defaults.API_MAX_BODY_BYTES} bytes") from None
            data = await handler(models.decode_body(raw))
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
        return envelope(0, SUCCEED, request_id, data)

    async def start_record(self, body: Any) -> dict:
        task_id = await self.node.start_record(models.parse_start_record(body, self.limits))
        return {"TaskId": task_id}

    async def stop_record(self, body: Any) -> dict:
        await self.node.stop_record(models.parse_task_request(body).task_id)
        return {}

    async def describe_record_status(self, body: Any) -> dict:
        return await self.node.describe_record_status(models.parse_task_request(body).task_id)

    async def describe_tasks(self, body: Any) -> dict:
        return await self.node.describe_tasks(models.parse_describe_tasks(body, int(time.time() * 1000)))

    async def pause_record(self, body: Any) -> dict:
        await self.node.pause_record(models.parse_task_request(body).task_id)
        return {}

    async def resume_record(self, body: Any) -> dict:
        await self.node.resume_record(models.parse_task_request(body).task_id)
        return {}

    async def take_snapshot(self, body: Any) -> dict:
        await self.node.take_snapshot(models.parse_task_request(body).task_id)
        return {}

    # health
    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        state = self.node.state
        return web.json_response({"status": str(state)}, status=200 if state is NodeState.READY else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=await self.node.metrics(),
                            headers={"Content-Type": metrics.CONTENT_TYPE, "X-Content-Type-Options": "nosniff"})

    # publishing: plain RTP (an SDP offer of what will be sent) and WHIP (RFC 9725)
    def _check_token(self, request: web.Request) -> None:
        token = self.config.ingest_token
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
            redirect = await self.node.redirect_publish(kind, room_id, stream_id)
            if redirect is not None:
                metrics.PUBLISHES.labels(kind, "redirected").inc()
                return self._redirect(request, redirect)
            try:
                sdp_text = (await request.read()).decode()
            except UnicodeDecodeError:
                raise errors.IngestError(400, "the SDP offer is not UTF-8") from None
            if kind == "whip":
                stream = await self.node.publish_whip(room_id, stream_id, user_id, user_name, sdp_text)
            else:  # the announcer's address: with --rtp-pin-source media is taken from its host only
                stream = await self.node.publish_rtp(room_id, stream_id, user_id, user_name, sdp_text,
                                                     announcer=request.remote or "")
        except errors.InvalidParameter as error:
            metrics.PUBLISHES.labels(kind, "invalid_request").inc()
            return web.Response(status=400, text=error.message + "\n")
        except errors.IngestError as error:
            metrics.PUBLISHES.labels(kind, publish_outcome(error.status, error.reason)).inc()
            return self._ingest_error(error)
        metrics.PUBLISHES.labels(kind, "accepted").inc()
        # Absolute: FFmpeg's WHIP client does not resolve a relative Location.
        location = f"{request.scheme}://{request.host}/{kind}/resource/{stream.resource_id}"
        return web.Response(status=201, text=stream.answer, content_type="application/sdp",
                            headers={"Location": location})

    @staticmethod
    def _redirect(request: web.Request, redirect: Redirect) -> web.Response:
        """307 (not 302/303): the publisher sends the same POST, body and Authorization
        header included, to the same path and query on the chosen node."""
        return web.Response(status=307, text=f"publish at node {redirect.node_id}\n",
                            headers={"Location": redirect.url.rstrip("/") + request.raw_path})

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
