"""Admission, decided in one place (engine.admission) for publishing and StartRecord."""

import asyncio
from dataclasses import replace

import pytest

from engine import errors
from engine.admission import NodeState
from engine.status import TaskStatus
from tests.engine.control_plane import OFFER, start_request, start_twins

pytestmark = pytest.mark.asyncio


async def test_a_draining_node_refuses_streams_and_tasks(twins):
    assert twins.node.state is NodeState.READY
    twins.node.admission.drain()
    with pytest.raises(errors.IngestError) as publish:
        await twins.node.publish_rtp("drain-room", "cam", "u", "u", OFFER)
    assert (publish.value.status, publish.value.retry_after) == (503, 5)
    with pytest.raises(errors.NodeBusy, match="draining"):
        await twins.node.start_record(start_request("drain-room"))
    assert twins.supervisor.started == []


async def test_a_stream_past_max_streams_gets_503_until_one_leaves(tmp_path):
    twins = await start_twins(tmp_path / "data", max_streams=1)
    try:
        first = await twins.node.publish_rtp("full-room", "a", "u", "u", OFFER)
        with pytest.raises(errors.IngestError, match="capacity") as refused:
            await twins.node.publish_rtp("full-room", "b", "u", "u", OFFER)
        assert (refused.value.status, refused.value.retry_after) == (503, 5)
        await twins.node.unpublish(first.resource_id)
        await twins.node.publish_rtp("full-room", "b", "u", "u", OFFER)
    finally:
        await twins.node.stop(deadline_s=2)


async def test_the_same_stream_twice_is_a_conflict(twins):
    await twins.node.publish_rtp("dup-room", "cam", "u", "u", OFFER)
    with pytest.raises(errors.IngestError) as conflict:
        await twins.node.publish_rtp("dup-room", "cam", "u", "u", OFFER)
    assert conflict.value.status == 409 and len(twins.supervisor.started) == 1


async def test_past_max_tasks_start_record_is_busy_but_a_client_task_id_repeat_answers(tmp_path):
    twins = await start_twins(tmp_path / "data", max_tasks=1)
    try:
        first = await twins.node.start_record(start_request("task-room", ClientTaskId="client-1"))
        with pytest.raises(errors.NodeBusy, match="capacity"):
            await twins.node.start_record(start_request("task-room"))
        assert await twins.node.start_record(start_request("task-room", ClientTaskId="client-1")) == first
        await twins.node.stop_record(first)
        await twins.node.start_record(start_request("task-room"))
    finally:
        await twins.node.stop(deadline_s=2)


async def test_max_tasks_holds_when_start_records_race(tmp_path):
    twins = await start_twins(tmp_path / "data", max_tasks=20)
    try:
        results = await asyncio.gather(*(twins.node.start_record(start_request(f"race-{i}")) for i in range(40)),
                                       return_exceptions=True)
        made = [r for r in results if isinstance(r, str)]
        assert len(made) == 20 and all(isinstance(r, errors.NodeBusy) for r in results if r not in made)
        # at capacity: a new ClientTaskId is a new task, refused; a known one answers its task
        with pytest.raises(errors.NodeBusy, match="tasks 20/20"):
            await twins.node.start_record(start_request("race-room", ClientTaskId="new-id"))
        await twins.node.stop_record(made[0])
        repeats = await asyncio.gather(*(twins.node.start_record(start_request("race-room", ClientTaskId="one-id"))
                                         for _ in range(10)))
        assert len(set(repeats)) == 1  # created once, while its repeats waited for it
        assert await twins.node.start_record(start_request("race-room", ClientTaskId="one-id")) == repeats[0]
        total, _ = await twins.node.store.page_tasks((TaskStatus.RECORDING,), None, 0, 1 << 62, 0, 100)
        assert total == 20
    finally:
        await twins.node.stop(deadline_s=2)


async def test_a_refused_creation_is_the_answer_of_its_repeats_too(twins):
    bad = start_request("bad-room", ClientTaskId="bad-id")
    bad = replace(bad, storage=replace(bad.storage, bucket="../escape"))
    results = await asyncio.gather(*(twins.node.start_record(bad) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, errors.InvalidParameter) for r in results), results
    assert await twins.node.store.get_task_by_client_id("bad-id") is None


async def test_max_streams_holds_when_publishes_race(tmp_path):
    twins = await start_twins(tmp_path / "data", max_streams=5)
    try:
        rtp, whip = twins.node.publish_rtp, twins.node.publish_whip
        results = await asyncio.gather(*((rtp if i % 2 else whip)("race-room", f"s{i}", "u", "u",
                                                                  OFFER if i % 2 else "v=0\r\n")
                                         for i in range(20)), return_exceptions=True)
        refused = [r for r in results if isinstance(r, errors.IngestError)]
        assert len(refused) == 15 and {r.status for r in refused} == {503}
        assert twins.node.streams.count == 5 and len(twins.supervisor.started) == 5
    finally:
        await twins.node.stop(deadline_s=2)
