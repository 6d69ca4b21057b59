"""Admission, decided in one place (engine.admission) for publishing and StartRecord."""

import pytest

from engine import errors
from engine.admission import NodeState
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
