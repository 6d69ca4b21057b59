"""Logs: one JSON object a line, tracebacks as structured JSON (from structlog, from
the standard library's loggers, from uncaught exceptions in threads), and an
access-log line per HTTP request that never carries the query (signatures)."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading

import aiohttp
import pytest
import structlog
from aiohttp.test_utils import TestServer

from engine.api import Api
from engine.auth import signed_query
from tests.engine.control_plane import OFFER, start_twins
from workers.logs import configure_logging


@pytest.fixture
def log_lines():
    """configure_logging into a buffer; the global logging set-up is put back afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, sys.excepthook, threading.excepthook, structlog.get_config())
    buffer = io.StringIO()
    configure_logging("info", secrets=("very-secret-token",), stream=buffer)

    def lines() -> list[dict]:
        return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]

    yield lines
    root.handlers, level, sys.excepthook, threading.excepthook, config = saved
    root.setLevel(level)
    structlog.configure(**config)


def _frames_of(event: dict) -> list[dict]:
    [exception] = event["exception"]
    return exception["frames"]


def test_a_logged_exception_is_a_json_traceback(log_lines):
    try:
        raise ValueError("broken very-secret-token")
    except ValueError:
        structlog.get_logger("t").exception("it_failed", task_id="T1")
    [event] = log_lines()
    assert event["event"] == "it_failed" and event["level"] == "error" and event["task_id"] == "T1"
    assert event["exception"][0]["exc_type"] == "ValueError"
    assert "[redacted]" in event["exception"][0]["exc_value"]
    assert _frames_of(event)[-1]["name"] == "test_a_logged_exception_is_a_json_traceback"


def test_standard_library_records_and_uncaught_thread_exceptions_are_json(log_lines):
    try:
        {}["missing"]
    except KeyError:
        logging.getLogger("aiohttp.server").exception("Error handling request")
    logging.getLogger("noisy.library").info("below warning: not shown")

    def crash() -> None:
        raise RuntimeError("in a thread")

    thread = threading.Thread(target=crash, name="uploader-1")
    thread.start()
    thread.join()
    records = log_lines()
    assert [r["event"] for r in records] == ["Error handling request", "uncaught_exception"]
    assert records[0]["logger"] == "aiohttp.server" and records[0]["exception"][0]["exc_type"] == "KeyError"
    assert records[1]["thread"] == "uploader-1" and records[1]["exception"][0]["exc_type"] == "RuntimeError"


@pytest.mark.asyncio
async def test_each_request_has_an_access_log_line_without_its_query(tmp_path, log_lines):
    twins = await start_twins(tmp_path / "data")

    async def broken(resource_id: str) -> dict:
        raise RuntimeError("a bug")

    twins.node.stream_stats = broken
    server = TestServer(Api(twins.node).app(), host="127.0.0.1")
    await server.start_server()
    query = signed_query("DescribeTasks", 1, "unit-secret")
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(server.make_url("/?" + query), data="{}") as answer:
                code = (await answer.json())["Code"]
            async with session.post(server.make_url("/rtp/room/cam"), data=OFFER,
                                    headers={"Content-Type": "application/sdp"}) as answer:
                assert answer.status == 201
            async with session.get(server.make_url("/rtp/resource/some-id")) as answer:
                assert answer.status == 500 and await answer.text() == "internal error\n"
            async with session.get(server.make_url("/healthz")) as answer:
                assert answer.status == 200
    finally:
        await server.close()
        await twins.node.stop(deadline_s=2)
    lines = log_lines()
    access = [r for r in lines if r["event"] == "http_request"]
    assert [(r["method"], r["path"], r["status"]) for r in access] == [
        ("POST", "/", 200), ("POST", "/rtp/room/cam", 201), ("GET", "/rtp/resource/some-id", 500)]  # no /healthz
    api = access[0]
    assert api["action"] == "DescribeTasks" and api["code"] == code and api["client"] == "127.0.0.1"
    assert api["duration_ms"] >= 0
    signature = dict(p.split("=") for p in query.split("&"))["Signature"]
    assert all(signature not in json.dumps(r) for r in lines)
    [failure] = [r for r in lines if r["event"] == "http_handler_failed"]
    assert failure["exception"][0]["exc_type"] == "RuntimeError" and failure["path"] == "/rtp/resource/some-id"


class _Writes(io.StringIO):
    """A stream that remembers each write call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return super().write(text)


def test_each_line_is_one_write_so_processes_sharing_stderr_never_split_a_line():
    """The node and its workers write to one stderr; unbuffered (PYTHONUNBUFFERED, set in the
    Docker image) every write reaches the file at once, so a line must be a single write
    (print's message-then-newline let another process's line in between: seen under load)."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, sys.excepthook, threading.excepthook, structlog.get_config())
    stream = _Writes()
    try:
        configure_logging("info", stream=stream)
        structlog.get_logger("t").info("from_structlog", n=1)
        logging.getLogger("aiohttp.t").warning("from the standard library")
    finally:
        root.handlers, level, sys.excepthook, threading.excepthook, config = saved
        root.setLevel(level)
        structlog.configure(**config)
    lines = [call for call in stream.calls if call]
    assert len(lines) == 2, stream.calls
    for call in lines:
        assert call.endswith("\n") and call.count("\n") == 1
        json.loads(call)
