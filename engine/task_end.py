"""What follows a task's end once its files are settled on every node of the fleet:
upload-finished (with every file's info) and normal-exit from the node that ended
it, once; on the other nodes, only forgetting the task."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from contract.codes import CallbackEvent
from engine import metrics, views
from engine.active_task import ActiveTask
from engine.clock import Clock
from engine.files import FileBook
from engine.snapshots import SnapshotBook
from engine.status import EndReason, FileStatus

Emit = Callable[[int, str, dict], Awaitable[None]]  # one of the task's events: type, message, detail


async def after_uploads(task: ActiveTask, reason: str, files: FileBook, snapshots: SnapshotBook, clock: Clock,
                        emit: Emit) -> None:
    """The node that ended the task: its last events, once every node's files are settled
    (a file of a node that died meanwhile is interrupted: the upload is partly finished)."""
    settled = await files.wait_settled(task.task_id)  # the task's files on every node
    if reason == EndReason.STOPPED and task.record.end_ms is not None:
        metrics.STOP_TO_DURABLE.observe(max(0, clock.wall_ms() - task.record.end_ms) / 1000)
    await snapshots.wait_settled(task.task_id)
    if task.record.request.output.output_format != "jpg":  # a jpg task's pictures had an event 1 each
        uploaded = all(f.status is FileStatus.UPLOADED for f in settled)
        file_info = [views.file_info(f, files.signed_url) for f in settled]
        await emit(CallbackEvent.UPLOADED, "upload finished" if uploaded else "upload partly finished",
                   {"upload_status": 1 if uploaded else 2, "file_info": file_info})
    if reason == EndReason.STOPPED:
        await emit(CallbackEvent.NORMAL_EXIT, "normal exit", {})
    await files.forget(task.task_id)
    snapshots.forget(task.task_id)


async def settle_here(task: ActiveTask, files: FileBook, snapshots: SnapshotBook) -> None:
    """A task whose end events are another node's: once its files are settled, forget it."""
    await files.wait_settled(task.task_id)
    await snapshots.wait_settled(task.task_id)
    await files.forget(task.task_id)
    snapshots.forget(task.task_id)
