"""engine.task_sync and the fleet's room rules: two whole nodes on fake workers and
fake clocks (tests/engine/control_plane.py) sharing one real PostgreSQL database."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from contract import protocol
from contract.codes import CallbackEvent
from engine import errors
from engine.active_task import ActiveTask, Verdict, judge
from engine.status import TaskStatus
from engine.store import TaskRecord
from tests.engine.control_plane import OFFER, eventually, start_request, start_twins



@pytest_asyncio.fixture
async def pair(postgres, tmp_path):
    url = postgres.create_database()
    one = await start_twins(tmp_path / "one", store_url=url, node_id="one", max_tasks=1)
    two = await start_twins(tmp_path / "two", store_url=url, node_id="two")
    yield one, two
    for twins in (one, two):
        await twins.node.stop(deadline_s=1.0)


async def synced(twins, done) -> None:
    """A sync round, then `done()`: a round the node began on its own (NOTIFY, polling) may hold
    the change half-applied when ours returns, so the outcome is awaited, not assumed."""
    await twins.node.task_sync.sync()

    async def applied() -> bool:
        return done()

    await eventually(applied)


def requests(worker, kind) -> list[str]:
    return [getattr(r, "task_id", None) or r.spec.task_id for r in worker.of_type(kind)]


@pytest.mark.asyncio
async def test_any_node_starts_pauses_resumes_and_stops_a_task_of_the_room(pair):
    one, two = pair
    await two.node.publish_rtp("room", "cam", "u", "u", OFFER)
    worker = two.supervisor.started[0]
    task_id = await one.node.start_record(start_request("room"))
    await synced(two, lambda: requests(worker, protocol.StartRecording) == [task_id])  # two records its stream

    await two.node.pause_record(task_id)  # on the node that did not start it
    assert requests(worker, protocol.PauseRecording) == [task_id]
    await one.node.task_sync.sync()
    assert one.node.tasks.held.get(task_id).record.status is TaskStatus.PAUSED
    with pytest.raises(errors.InvalidParameter):  # the store says it is paused, whoever is asked
        await one.node.pause_record(task_id)
    await one.node.resume_record(task_id)
    await synced(two, lambda: requests(worker, protocol.ResumeRecording) == [task_id])

    await one.node.stop_record(task_id)
    await synced(two, lambda: requests(worker, protocol.StopRecording) == [task_id]
                 and two.node.tasks.held.get(task_id) is None)
    await one.until_events(task_id, [CallbackEvent.PAUSED, CallbackEvent.RESUMED, CallbackEvent.STOPPED_UPLOADING,
                                     CallbackEvent.UPLOADED, CallbackEvent.NORMAL_EXIT])


@pytest.mark.asyncio
async def test_a_node_hears_of_a_new_task_at_once_on_postgresql(pair):
    """LISTEN/NOTIFY wakes the other node's sync: polling alone would take a minute here."""
    one, two = pair
    sync = two.node.task_sync
    sync.poll_s = 60.0
    rounds = sync.rounds

    async def round_done() -> bool:  # the wait begun before the change is over
        return sync.rounds > rounds

    await eventually(round_done)
    task_id = await one.node.start_record(start_request("heard"))

    async def held() -> bool:
        return two.node.tasks.held.get(task_id) is not None

    await eventually(held, timeout_s=1.0)


@pytest.mark.asyncio
async def test_two_nodes_ending_a_task_at_once_end_it_once(pair):
    one, two = pair
    task_id = await one.node.start_record(start_request("race"))
    await two.node.task_sync.sync()
    await asyncio.gather(one.node.stop_record(task_id), two.node.stop_record(task_id))
    await one.until_events(task_id, [CallbackEvent.STOPPED_UPLOADING, CallbackEvent.UPLOADED,
                                     CallbackEvent.NORMAL_EXIT])
    with pytest.raises(errors.TaskAlreadyStopped):
        await two.node.stop_record(task_id)


@pytest.mark.asyncio
async def test_max_tasks_counts_the_tasks_this_node_created(pair):
    one, two = pair
    await two.node.start_record(start_request("theirs"))
    await one.node.task_sync.sync()
    assert len(one.node.tasks.held.all()) == 1  # it follows the other node's task ...
    await one.node.start_record(start_request("mine"))  # ... which does not count against its --max-tasks 1
    with pytest.raises(errors.NodeBusy):
        await one.node.start_record(start_request("one-too-many"))


@pytest.mark.asyncio
async def test_a_task_whose_node_died_is_taken_over_and_its_files_interrupted(pair):
    one, two = pair
    await two.node.publish_rtp("room", "cam", "u", "u", OFFER)
    task_id = await two.node.start_record(start_request("room"))

    async def file_statuses() -> list[int]:
        return [f["Status"] for f in (await one.status(task_id)).get("RecordFiles", [])]

    async def recording() -> bool:
        return await file_statuses() == [1]

    await eventually(recording)  # two's file, as one describes it
    await one.node.task_sync.sync()
    assert one.node.tasks.streams_elsewhere("room") == {"cam"}
    two.node.fleet._renewer.cancel()  # two stops renewing (killed, partitioned)
    one.clock.advance(two.node.config.node_lease_s + 0.1)
    await one.node.fleet.renew()
    await one.node.task_sync.sync()
    assert one.node.tasks.streams_elsewhere("room") == set()  # its stream is counted gone
    assert await file_statuses() == [5]  # interrupted
    assert one.node.tasks.held.get(task_id).record.node_id == "one"  # it sends the room's events now
    assert (await one.node.store.get_task(task_id)).node_id == "one"


def test_room_rules_count_the_streams_of_every_node_and_only_the_owner_sends_events():
    request = start_request("room", MaxIdleTime=5, RecordStreamList=[{"StreamId": "cam"}, {"StreamId": "mic"}])
    record = TaskRecord("T" * 16, None, "room", TaskStatus.RECORDING, request, created_ms=0, node_id="one")
    owner, follower = ActiveTask(record, None, started=0.0), ActiveTask(record, None, started=0.0)

    def both(now: float, streams: set[str]) -> tuple[Verdict, Verdict]:
        return tuple(judge(task, now, int(now * 1000), streams, task is owner, room_empty_event_s=2.0,
                           stream_missing_event_s=3.0) for task in (owner, follower))

    assert both(100.0, {"cam"}) == (Verdict(missing=("mic",)), Verdict())  # "cam" is on another node
    assert both(101.0, set()) == (Verdict(), Verdict())  # the room is empty from now on
    assert both(103.0, set()) == (Verdict(room_empty=True), Verdict())
    assert both(104.9, {"other"}) == (Verdict(), Verdict())  # a stream the task does not record
    assert both(106.0, set()) == (Verdict(idle=True), Verdict(idle=True))  # either may end it: the store picks one
