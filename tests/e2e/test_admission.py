"""Admission by capacity, and /metrics."""

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from testkit.node import NodeProcess, http, start_record_body
from testkit.ports import free_port, free_udp_range
from testkit.rtp import PublisherSpec, offer_sdp
from tests.metrics_text import value


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
        assert value(text, "recnode_streams") == 1 and value(text, "recnode_capacity_streams") == 1
        assert value(text, "recnode_tasks", status="recording") == 2
        assert value(text, "recnode_load") >= 1.0
        assert value(text, "recnode_workers") == 1 and value(text, "recnode_upload_backlog_objects") == 0
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


def concurrently(calls, count):
    """Run `count` calls at once (each its own thread and connection); their answers."""
    with ThreadPoolExecutor(count) as pool:
        start = threading.Barrier(count)

        def call(i):
            start.wait()
            return calls(i)

        return list(pool.map(call, range(count)))


def test_max_tasks_holds_under_concurrent_start_records(tmp_path):
    node = NodeProcess(tmp_path / "data", free_port(), free_udp_range(4), tmp_path / "n.log",
                       extra_args=("--max-tasks", "20")).start()
    try:
        answers = concurrently(lambda i: node.call("StartRecord", start_record_body(f"race-{i}")), 40)
        codes = [a["Code"] for a in answers]
        assert codes.count(0) == 20 and codes.count(300010001) == 20, codes
        active = node.ok("DescribeTasks", {"Status": 2})["TotalCount"]
        assert active == 20
        # at capacity: a new ClientTaskId is refused, a repeat of one that exists answers its task
        fresh = node.call("StartRecord", {**start_record_body("race-new"), "ClientTaskId": "client-new"})
        assert fresh["Code"] == 300010001 and fresh["Message"] == "node at capacity: tasks 20/20"
        stopped = next(a["Data"]["TaskId"] for a in answers if a["Code"] == 0)
        node.ok("StopRecord", {"TaskId": stopped})
        made = node.ok("StartRecord", {**start_record_body("race-id"), "ClientTaskId": "client-kept"})["TaskId"]
        repeats = concurrently(lambda i: node.call(
            "StartRecord", {**start_record_body("race-id"), "ClientTaskId": "client-kept"}), 10)
        assert [r["Code"] for r in repeats] == [0] * 10 and {r["Data"]["TaskId"] for r in repeats} == {made}
        assert node.ok("DescribeTasks", {"Status": 2})["TotalCount"] == 20
    finally:
        node.stop()


def test_max_streams_holds_under_concurrent_announces(tmp_path):
    node = NodeProcess(tmp_path / "data", free_port(), free_udp_range(60), tmp_path / "n.log",
                       extra_args=("--max-streams", "5")).start()
    try:
        sdp = offer_sdp(PublisherSpec(), True, True)
        answers = concurrently(lambda i: node.publish("race-room", f"s{i}", sdp), 20)
        statuses = [a.status for a in answers]
        assert statuses.count(201) == 5 and statuses.count(503) == 15, statuses
        metrics = http("GET", node.base_url + "/metrics").body.decode()
        assert re.search(r"^recnode_streams 5(\.0)?$", metrics, re.M)  # prometheus_client prints floats
    finally:
        node.stop()


def test_a_node_over_its_cpu_cap_answers_busy_naming_the_cpu(tmp_path):
    """CPU admission end to end: the node samples its own process tree on its ticker; with a cap
    below what an idle node uses, StartRecord and publishing are refused, naming the CPU."""
    cap = 0.0001  # a hundredth of a percent of the node's cores: an idle node uses more
    node = NodeProcess(tmp_path / "data", free_port(), free_udp_range(20), tmp_path / "n.log",
                       cpu_cap=str(cap)).start()
    try:
        deadline = time.monotonic() + 20
        while value(http("GET", node.base_url + "/metrics").body.decode(), "recnode_cpu_utilization") <= cap:
            assert time.monotonic() < deadline, "the node never measured its own CPU"
            time.sleep(0.1)
        answer = node.call("StartRecord", start_record_body("cpu-room"))
        assert answer["Code"] == 300010001
        assert re.fullmatch(r"node at capacity: cpu \d+%/0% of [\d.]+ cores", answer["Message"]), answer
        refused = node.publish("cpu-room", "a", offer_sdp(PublisherSpec(), True, True))
        assert refused.status == 503 and re.fullmatch(r"node at capacity: cpu \d+%/0% of [\d.]+ cores",
                                                      refused.body.decode().strip())
    finally:
        node.stop()
