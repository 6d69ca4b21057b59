"""Admission by capacity, and /metrics."""

import re

from testkit.node import NodeProcess, http, start_record_body
from testkit.ports import free_port, free_udp_range
from testkit.rtp import PublisherSpec, offer_sdp


def test_a_full_node_answers_busy_and_metrics_show_it(tmp_path):
    node = NodeProcess(tmp_path / "data", free_port(), free_udp_range(20), tmp_path / "n.log",
                       extra_args=("--max-streams", "1", "--max-tasks", "2")).start()
    try:
        sdp = offer_sdp(PublisherSpec(), True, True)
        first = node.publish("busy-room", "a", sdp)
        assert first.status == 201
        second = node.publish("busy-room", "b", sdp)
        assert second.status == 503 and second.headers["Retry-After"] == "5"
        assert second.body.decode().strip() == "node at capacity: streams 1/1"
        tasks = [node.ok("StartRecord", start_record_body("busy-room"))["TaskId"] for _ in range(2)]
        answer = node.call("StartRecord", start_record_body("busy-room"))
        assert answer["Code"] == 300010001 and answer["Message"] == "node at capacity: tasks 2/2"
        refusals = [line for line in node.logs().splitlines() if "_refused" in line]
        assert len(refusals) == 2 and "streams 1/1" in refusals[0] and "tasks 2/2" in refusals[1]
        metrics = http("GET", node.base_url + "/metrics")
        assert metrics.status == 200 and metrics.headers["Content-Type"].startswith("text/plain")
        text = metrics.body.decode()
        values = dict(re.findall(r"^(recnode_\w+(?:\{[^}]*\})?) ([0-9.e+-]+)$", text, re.M))
        assert values["recnode_streams"] == "1" and values["recnode_capacity_streams"] == "1"
        assert values['recnode_tasks{status="recording"}'] == "2"
        assert float(values["recnode_load"]) >= 1.0
        assert values["recnode_workers"] == "1" and values["recnode_upload_backlog_objects"] == "0"
        assert "# TYPE recnode_load gauge" in text
        node.ok("StopRecord", {"TaskId": tasks[0]})
        assert node.call("StartRecord", start_record_body("busy-room"))["Code"] == 0
        node.unpublish(first.headers["Location"])
        assert node.publish("busy-room", "b", sdp).status == 201
    finally:
        node.stop()


def test_default_capacity_comes_from_the_cores(tmp_path):
    import os

    from engine.capacity import allowed_cores, default_max_streams

    assert allowed_cores() <= os.cpu_count()
    assert default_max_streams() == int(40 * allowed_cores())  # README: `--max-streams` 40 per core
