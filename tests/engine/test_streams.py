"""The stream registry on in-memory twins: publishing, a worker's death and its
restarts, FillBlank, WHIP, inactivity, and the streams a restarted node restores."""

import pytest

from contract import protocol
from contract.codes import CallbackEvent as E
from contract.codes import OfferRefusal
from engine import defaults, errors
from tests.engine.control_plane import OFFER, PORTS, eventually, start_request, start_twins

pytestmark = pytest.mark.asyncio


async def test_publishing_answers_ports_from_the_range_and_stats_name_the_worker(twins):
    stream = await twins.node.publish_rtp("pub-room", "cam", "u", "u", OFFER)
    assert len(stream.ports) == 2 and all(PORTS[0] <= p <= PORTS[1] and p % 2 == 0 for p in stream.ports)
    assert all(f" {p} RTP/AVP" in stream.answer for p in stream.ports)
    [worker] = twins.supervisor.started
    assert worker.config.rtp_ports == stream.ports and worker.config.stream.stream_id == "cam"
    stats = await twins.node.stream_stats(stream.resource_id)
    assert stats["WorkerPid"] == worker.pid and stats["Ports"] == list(stream.ports)
    await twins.node.unpublish(stream.resource_id)
    assert worker.exited and await twins.node.store.streams() == []
    with pytest.raises(errors.IngestError) as gone:
        await twins.node.stream_stats(stream.resource_id)
    assert gone.value.status == 404


async def test_a_dead_worker_keeps_its_file_and_a_new_one_records_on_the_same_ports(twins):
    stream = await twins.node.publish_rtp("crash-room", "cam", "u", "u", OFFER)
    task_id = await twins.node.start_record(start_request("crash-room"))
    first = twins.supervisor.started[0]
    first.crash()
    await twins.until_workers(2)
    second = twins.supervisor.started[1]
    assert second.config.rtp_ports == stream.ports
    assert [r.spec.task_id for r in second.of_type(protocol.StartRecording)] == [task_id]

    async def both_files() -> bool:  # the new worker's file reaches the store as its event is handled
        return len((await twins.status(task_id))["RecordFiles"]) == 2

    await eventually(both_files)
    status = await twins.status(task_id)
    assert status["Status"] == 2
    # the dead worker's file: what it wrote, as stored; the new worker's: recording
    assert [(f["Status"], f["FileSize"] > 0) for f in status["RecordFiles"]] == [(3, True), (1, False)]
    assert E.ABNORMAL_END not in await twins.events(task_id)  # the task goes on


async def test_at_most_3_restarts_a_minute_then_the_stream_is_unpublished(twins):
    assert defaults.WORKER_MAX_RESTARTS_PER_MINUTE == 3  # the README documents 3
    stream = await twins.node.publish_rtp("flaky-room", "cam", "u", "u", OFFER)
    for restarts in range(1, 4):
        twins.supervisor.started[-1].crash()
        await twins.until_workers(1 + restarts)
        twins.clock.advance(19)  # all three within a minute
    twins.supervisor.started[-1].crash()
    await twins.until_streams(0)
    assert len(twins.supervisor.started) == 4 and await twins.node.store.streams() == []
    with pytest.raises(errors.IngestError):
        await twins.node.stream_stats(stream.resource_id)


async def test_restarts_older_than_a_minute_do_not_count(twins):
    await twins.node.publish_rtp("slow-room", "cam", "u", "u", OFFER)
    for restarts in range(1, 6):
        twins.supervisor.started[-1].crash()
        await twins.until_workers(1 + restarts)
        twins.clock.advance(21)  # three in any 60 s at most
    assert twins.node.streams.count == 1


async def test_a_worker_that_cannot_be_restarted_unpublishes_its_stream(twins):
    await twins.node.publish_rtp("broken-room", "cam", "u", "u", OFFER)
    twins.supervisor.failures = 1
    twins.supervisor.started[0].crash()
    await twins.until_streams(0)


async def test_a_worker_that_fails_to_start_gets_a_503_and_frees_its_ports(tmp_path):
    twins = await start_twins(tmp_path / "data", rtp_port_range=(PORTS[0], PORTS[0] + 3))  # two port pairs
    try:
        twins.supervisor.failures = 3  # every attempt
        with pytest.raises(errors.IngestError) as refused:
            await twins.node.publish_rtp("fail-room", "cam", "u", "u", OFFER)
        assert (refused.value.status, refused.value.retry_after) == (503, 5)
        stream = await twins.node.publish_rtp("fail-room", "cam", "u", "u", OFFER)  # the ports went back
        assert sorted(stream.ports) == [PORTS[0], PORTS[0] + 2]
    finally:
        await twins.node.stop(deadline_s=2)


async def test_fill_blank_keeps_the_worker_with_its_files_until_the_stream_returns(twins):
    first = await twins.node.publish_rtp("blank-room", "cam", "u", "u", OFFER)
    first_resource = first.resource_id
    task_id = await twins.node.start_record(start_request("blank-room", FillBlank=True))
    worker = twins.supervisor.started[0]
    await twins.node.unpublish(first_resource)
    assert not worker.exited and [type(r) for r in worker.requests][-1] is protocol.StopInput
    again = await twins.node.publish_rtp("blank-room", "cam", "u", "u", OFFER)
    assert len(twins.supervisor.started) == 1 and again.worker is worker
    assert again.resource_id != first_resource
    assert worker.of_type(protocol.StartInput)[0].rtp_ports == again.ports
    assert len((await twins.status(task_id))["RecordFiles"]) == 1  # the same file goes on
    await twins.node.unpublish(again.resource_id)
    await twins.node.stop_record(task_id)  # no task keeps its files open any more: the worker goes
    await twins.node.streams.close_lingering()
    assert worker.exited


async def test_without_fill_blank_a_departed_stream_s_worker_stops(twins):
    stream = await twins.node.publish_rtp("plain-room", "cam", "u", "u", OFFER)
    await twins.node.start_record(start_request("plain-room"))
    await twins.node.unpublish(stream.resource_id)
    assert twins.supervisor.started[0].exited


async def test_an_inactive_stream_leaves_its_room(twins):
    await twins.node.publish_rtp("quiet-room", "cam", "u", "u", OFFER)
    twins.supervisor.started[0].say(protocol.StreamInactive(10.0))

    async def left() -> bool:
        return twins.node.streams.count == 0 and twins.supervisor.started[0].exited

    await eventually(left)


async def test_whip_takes_the_tracks_the_worker_negotiated(twins):
    stream = await twins.node.publish_whip("whip-room", "cam", "u", "u", "v=0\r\n(offer)\r\n")
    [worker] = twins.supervisor.started
    assert [type(r) for r in worker.requests] == [protocol.AcceptOffer]
    assert [t.codec for t in stream.spec.tracks] == ["H264", "opus"] and stream.answer.startswith("v=0")


async def test_a_refused_whip_offer_answers_the_workers_reason_and_leaves_nothing(twins):
    twins.supervisor.offer_refusal = OfferRefusal.UNSUPPORTED
    with pytest.raises(errors.IngestError) as refused:
        await twins.node.publish_whip("whip-room", "cam", "u", "u", "v=0\r\n")
    assert refused.value.status == 406 and refused.value.retry_after is None
    assert twins.supervisor.started[0].exited and twins.node.streams.count == 0


async def test_a_whip_stream_whose_worker_dies_is_unpublished(twins):
    await twins.node.publish_whip("whip-room", "cam", "u", "u", "v=0\r\n")
    twins.supervisor.started[0].crash()
    await twins.until_streams(0)
    assert len(twins.supervisor.started) == 1  # the peer connection died with it: no restart


async def test_a_restarted_node_listens_again_on_the_ports_of_its_rtp_streams(tmp_path):
    data_dir = tmp_path / "data"
    before = await start_twins(data_dir)
    stream = await before.node.publish_rtp("restore-room", "cam", "u", "u", OFFER)
    task_id = await before.node.start_record(start_request("restore-room"))
    await before.node.stop(deadline_s=2)  # drained: the stream and the task stay in the store

    after = await start_twins(data_dir)
    try:
        [worker] = after.supervisor.started
        assert worker.config.rtp_ports == stream.ports
        assert [r.spec.task_id for r in worker.of_type(protocol.StartRecording)] == [task_id]
        stats = await after.node.stream_stats(stream.resource_id)
        assert stats["Ports"] == list(stream.ports)
        assert (await after.status(task_id))["Status"] == 2
    finally:
        await after.node.stop(deadline_s=2)
