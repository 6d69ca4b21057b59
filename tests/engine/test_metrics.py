"""/metrics on a node of in-memory twins, served by the real HTTP API on 127.0.0.1
and read with prometheus_client's parser: each counter moves when its event
happens, and the exposition holds counters and histograms, not only gauges."""

from __future__ import annotations

import contextlib
import json

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from engine.api import Api
from engine.auth import signed_query
from tests.engine.control_plane import OFFER, Twins, eventually, start_request, start_twins
from tests.engine.fakes import FILE_BYTES, FakeTransport
from tests.metrics_text import families, value

pytestmark = pytest.mark.asyncio


class Served:
    """The node's HTTP API on a real loopback port."""

    def __init__(self, twins: Twins):
        self.twins = twins
        self.server = TestServer(Api(twins.node).app(), host="127.0.0.1")
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Served:
        await self.server.start_server()
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.session.close()
        await self.server.close()

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def metrics(self) -> str:
        async with self.session.get(self.url("/metrics")) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return await response.text()

    async def action(self, name: str, body: dict, secret: str = "unit-secret") -> dict:
        async with self.session.post(self.url("/?" + signed_query(name, 1, secret)), data=json.dumps(body)) as r:
            return await r.json()

    async def publish(self, room: str, stream: str, content_type: str = "application/sdp") -> int:
        async with self.session.post(self.url(f"/rtp/{room}/{stream}"), data=OFFER,
                                     headers={"Content-Type": content_type}) as response:
            return response.status


@contextlib.asynccontextmanager
async def served(tmp_path, **config):
    twins = await start_twins(tmp_path / "data", **config)
    try:
        async with Served(twins) as http:
            yield http
    finally:
        await twins.node.stop(deadline_s=2)


START_BODY = {"RoomId": "m-room", "RecordInputParams": {"RecordMode": 1},
              "RecordOutputParams": {"OutputFileFormat": "mp4", "OutputFolder": "rec/"},
              "StorageParams": {"Vendor": 0, "Bucket": "unit"}}


async def test_the_exposition_has_counters_histograms_gauges_and_build_info(tmp_path):
    async with served(tmp_path) as http:
        text = await http.metrics()
    kinds = families(text)
    assert kinds["recnode_api_requests"] == "counter"
    assert kinds["recnode_api_request_duration_seconds"] == "histogram"
    assert kinds["recnode_stop_to_durable_seconds"] == "histogram"
    assert kinds["recnode_streams"] == kinds["recnode_spool_bytes"] == "gauge"
    assert kinds["recnode_build_info"] == "gauge"  # an Info, in the text format
    assert value(text, "recnode_build_info", **_build_labels(text)) == 1
    assert value(text, "recnode_ready") == 1


def _build_labels(text: str) -> dict[str, str]:
    from prometheus_client.parser import text_string_to_metric_families

    [family] = [f for f in text_string_to_metric_families(text) if f.name == "recnode_build_info"]
    labels = family.samples[0].labels
    assert labels["version"] and labels["python"].startswith("3.")
    return labels


async def test_api_calls_count_by_action_and_code_with_latency(tmp_path):
    async with served(tmp_path) as http:
        before = await http.metrics()
        assert (await http.action("StartRecord", START_BODY))["Code"] == 0
        refused = await http.action("DescribeTasks", {}, secret="wrong")
        unknown = await http.action("NoSuchAction", {})
        after = await http.metrics()
    assert refused["Code"] != 0 and unknown["Code"] != 0
    for labels, grown in ((dict(action="StartRecord", code="0"), 1),
                          (dict(action="DescribeTasks", code=str(refused["Code"])), 1),
                          (dict(action="other", code=str(unknown["Code"])), 1)):
        assert value(after, "recnode_api_requests_total", **labels) - \
            value(before, "recnode_api_requests_total", **labels) == grown, labels
    count = "recnode_api_request_duration_seconds_count"
    assert value(after, count, action="StartRecord") - value(before, count, action="StartRecord") == 1


async def test_publishes_count_accepted_and_refused_by_reason(tmp_path):
    async with served(tmp_path) as http:
        before = await http.metrics()
        assert await http.publish("p-room", "cam") == 201
        assert await http.publish("p-room", "cam") == 409
        assert await http.publish("p-room", "cam2", content_type="text/plain") == 415
        after = await http.metrics()
    for outcome in ("accepted", "already_published", "not_sdp"):
        name = "recnode_publishes_total"
        assert value(after, name, input="rtp", outcome=outcome) - \
            value(before, name, input="rtp", outcome=outcome) == 1, outcome


async def test_a_publish_past_capacity_counts_as_capacity(tmp_path):
    async with served(tmp_path, max_streams=1) as http:
        before = await http.metrics()
        assert await http.publish("c-room", "one") == 201
        assert await http.publish("c-room", "two") == 503
        after = await http.metrics()
    name = "recnode_publishes_total"
    assert value(after, name, input="rtp", outcome="capacity") - \
        value(before, name, input="rtp", outcome="capacity") == 1


async def test_worker_starts_deaths_and_restarts_count(tmp_path):
    async with served(tmp_path) as http:
        before = await http.metrics()
        await http.twins.node.publish_rtp("w-room", "cam", "u", "u", OFFER)
        http.twins.supervisor.started[0].crash()
        await http.twins.until_workers(2)
        http.twins.supervisor.failures = 1
        assert await http.publish("w-room", "other") == 201  # the first start fails, the second takes
        after = await http.metrics()
    for name, grown in (("recnode_worker_starts_total", 3), ("recnode_worker_deaths_total", 1),
                        ("recnode_worker_restarts_total", 1), ("recnode_worker_start_failures_total", 1)):
        assert value(after, name) - value(before, name) == grown, name


async def test_ingest_counters_sum_the_workers_counters_per_input_and_track(tmp_path):
    async with served(tmp_path) as http:
        before = await http.metrics()
        stream = await http.twins.node.publish_rtp("i-room", "cam", "u", "u", OFFER)
        worker = http.twins.supervisor.started[0]
        worker.track_stats = {"video": {"datagrams": 10, "garbage": 1, "foreign": 2, "jitter_lost_packets": 3,
                                        "jitter_late": 4}, "audio": {"datagrams": 5}}
        middle = await http.metrics()
        worker.track_stats = {"video": {"datagrams": 25, "garbage": 1, "foreign": 2, "jitter_lost_packets": 3,
                                        "jitter_late": 4}, "audio": {"datagrams": 7}}
        await http.twins.node.unpublish(stream.resource_id)  # what it counted stays counted
        after = await http.metrics()

    def grown(name: str, track: str, old: str, new: str) -> float:
        return value(new, name, input="rtp", track=track) - value(old, name, input="rtp", track=track)

    assert grown("recnode_ingest_datagrams_total", "video", before, middle) == 10
    assert grown("recnode_ingest_datagrams_total", "video", middle, after) == 0  # unpublished before a poll
    for name, expected in (("recnode_ingest_garbage_datagrams_total", 1), ("recnode_ingest_foreign_datagrams_total", 2),
                           ("recnode_ingest_lost_packets_total", 3), ("recnode_ingest_late_packets_total", 4)):
        assert grown(name, "video", before, after) == expected, name
    assert grown("recnode_ingest_datagrams_total", "audio", before, after) == 5


async def test_a_new_input_session_counts_whole_not_backwards(tmp_path):
    from engine.metrics import IngestTotals

    totals = IngestTotals()
    totals.observe("s", "rtp", {"video": {"datagrams": 10}})
    totals.observe("s", "rtp", {"video": {"datagrams": 3}})  # the counters started again
    totals.observe("s", "rtp", {"video": {"datagrams": 5}})
    assert totals.totals[("recnode_ingest_datagrams", "rtp", "video")] == 15


async def test_bytes_written_and_stop_to_durable_count(tmp_path):
    async with served(tmp_path) as http:
        before = await http.metrics()
        await http.twins.node.publish_rtp("s-room", "cam", "u", "u", OFFER)
        task_id = await http.twins.node.start_record(start_request("s-room"))
        await http.twins.node.stop_record(task_id)
        await http.twins.delivered(task_id, 1)
        after = await http.metrics()
    assert value(after, "recnode_storage_written_bytes_total", vendor="0") - \
        value(before, "recnode_storage_written_bytes_total", vendor="0") == len(FILE_BYTES)
    assert value(after, "recnode_stop_to_durable_seconds_count") - \
        value(before, "recnode_stop_to_durable_seconds_count") == 1


async def test_callback_failures_retries_and_give_ups_count(tmp_path):
    transport = FakeTransport(500, 200, 500)  # the first event fails once then goes; the rest fail
    twins = await start_twins(tmp_path / "data", transport, callback_retries=1, callback_retry_interval_s=0.01)
    try:
        async with Served(twins) as http:
            before = await http.metrics()
            task_id = await twins.node.start_record(start_request("cb-room"))
            await twins.node.pause_record(task_id)  # event 201: fails once, then delivered
            await twins.node.resume_record(task_id)  # event 202: fails twice, given up

            async def delivered_and_given_up() -> bool:
                text = await http.metrics()
                name = "recnode_callbacks_given_up_total"
                return value(text, name) > value(before, name)

            await eventually(delivered_and_given_up)
            after = await http.metrics()
    finally:
        await twins.node.stop(deadline_s=1)

    def grown(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grown("recnode_callback_deliveries_total", result="delivered") >= 1
    assert grown("recnode_callback_deliveries_total", result="failed") >= 2
    assert grown("recnode_callback_retries_total") >= 1
    assert grown("recnode_callbacks_given_up_total") >= 1
    assert "recnode_callback_backlog" in families(after)
