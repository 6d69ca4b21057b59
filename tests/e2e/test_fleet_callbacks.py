"""Callbacks from a fleet: two real `recnode serve` processes on the session's
PostgreSQL and one real receiver. Each event reaches it once, in order per task,
while both nodes send; and a node killed with its task's events undelivered has
them delivered by the other once its lease ran out."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

from contract.codes import CallbackEvent
from testkit.node import NodeProcess, start_record_body
from testkit.ports import free_port, free_udp_range
from tests.e2e.conftest import CALLBACK_SECRET
from tests.helpers.callback_receiver import CallbackReceiver

LEASE_S = 2
CYCLES = 3  # pause + resume, per task
STOPPED = [CallbackEvent.STOPPED_UPLOADING, CallbackEvent.UPLOADED, CallbackEvent.NORMAL_EXIT]


def sending_node(store_url: str, base: Path, node_id: str, receiver: CallbackReceiver) -> NodeProcess:
    """A node of the fleet whose callbacks go to `receiver`, retried every 0.1 s (then doubling), for long."""
    return NodeProcess(base / node_id, free_port(), free_udp_range(4), base / f"{node_id}.log",
                       extra_env={"RECNODE_STORE_URL": store_url, "RECNODE_CALLBACK_SECRET": CALLBACK_SECRET},
                       extra_args=("--test-limits", "--node-id", node_id, "--node-lease", str(LEASE_S),
                                   "--callback-url", receiver.url, "--callback-retry-interval", "0.1",
                                   "--callback-retries", "1000")).start()


def undone(store_url: str) -> int:
    with psycopg.connect(store_url) as connection:
        return connection.execute("SELECT COUNT(*) FROM callbacks WHERE done_ms IS NULL").fetchone()[0]


def assert_once_in_order(receiver: CallbackReceiver, task_id: str, events: list[int]) -> None:
    """Every POST the receiver took for the task (answered 200 or not) was a new event, in sequence."""
    posted = receiver.of_task(task_id, delivered_only=False)
    assert [(r.body["sequence"], r.body["event_type"], r.answered) for r in posted] == [
        (sequence, event, 200) for sequence, event in enumerate(events)], task_id
    assert all(r.signature_ok for r in posted)


def test_two_nodes_sending_at_once_deliver_each_event_once_in_order(postgres, tmp_path, receiver):
    url = postgres.create_database()
    nodes = [sending_node(url, tmp_path, f"node-{i}", receiver) for i in (1, 2)]
    try:
        tasks = [(node, node.ok("StartRecord", start_record_body(f"cb-race-{i}-{n}"))["TaskId"])
                 for i, node in enumerate(nodes) for n in range(8)]

        def make_events(node: NodeProcess, task_id: str) -> None:
            for _ in range(CYCLES):
                node.ok("PauseRecord", {"TaskId": task_id})
                node.ok("ResumeRecord", {"TaskId": task_id})
            node.ok("StopRecord", {"TaskId": task_id})

        with ThreadPoolExecutor(len(tasks)) as pool:  # both nodes produce events (and send them) at once
            for done in [pool.submit(make_events, node, task_id) for node, task_id in tasks]:
                done.result()
        expected = [CallbackEvent.PAUSED, CallbackEvent.RESUMED] * CYCLES + STOPPED
        for _, task_id in tasks:
            receiver.wait_for(task_id, lambda events: len(events) >= len(expected))
        deadline = time.monotonic() + 10
        while undone(url):  # every event's delivery written down: a second sender would have sent by now
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for _, task_id in tasks:
            assert_once_in_order(receiver, task_id, expected)
    finally:
        for node in nodes:
            node.stop()


def test_a_killed_nodes_undelivered_events_are_delivered_by_another_after_its_lease(postgres, tmp_path):
    url = postgres.create_database()
    receiver = CallbackReceiver(CALLBACK_SECRET)
    doomed, survivor = (sending_node(url, tmp_path, f"node-{i}", receiver) for i in (1, 2))
    try:
        task_id = doomed.ok("StartRecord", start_record_body("cb-killed"))["TaskId"]
        receiver.refusing.add(task_id)
        for _ in range(2):
            doomed.ok("PauseRecord", {"TaskId": task_id})
            doomed.ok("ResumeRecord", {"TaskId": task_id})
        deadline = time.monotonic() + 10
        while len(receiver.of_task(task_id, delivered_only=False)) < 2:  # refused, and being retried
            assert time.monotonic() < deadline
            time.sleep(0.05)
        doomed.process.kill()
        doomed.process.wait()
        killed_at = time.monotonic()
        receiver.refusing.discard(task_id)
        delivered = receiver.wait_for(task_id, lambda events: len(events) >= 4, timeout=LEASE_S + 10)
        assert delivered[0].at - killed_at > LEASE_S * 0.5  # not before the node's lease ran out
        # each once and in order; the task's room is empty, so room-empty events (4) may follow
        # from its owner (the survivor, once it has taken the task over)
        assert [r.body["sequence"] for r in delivered] == list(range(len(delivered)))
        assert [(r.body["sequence"], r.body["event_type"]) for r in delivered[:4]] == list(enumerate(
            [CallbackEvent.PAUSED, CallbackEvent.RESUMED] * 2))
        assert {r.body["event_type"] for r in delivered[4:]} <= {CallbackEvent.ROOM_EMPTY}
        assert {r.body["sequence"] for r in receiver.of_task(task_id, delivered_only=False)
                if r.answered != 200} == {0}  # the killed node kept retrying its first event
        assert '"callbacks_taken_over"' in survivor.logs() and task_id in survivor.logs()
        while undone(url):
            assert time.monotonic() < deadline + LEASE_S + 10
            time.sleep(0.05)
        sequences = [r.body["sequence"] for r in receiver.of_task(task_id)]
        assert sequences == list(range(len(sequences))) and len(sequences) >= 4  # nothing twice, nothing lost
    finally:
        survivor.stop()
        doomed.stop()
        receiver.close()
