"""FileBook settling files from worker events and upload results: the real store
(SQLite on tmp_path), the real spool and uploader, the in-memory bucket twin, an
injected clock. No sockets, no sleeps."""

from __future__ import annotations

import asyncio
import subprocess

from contract import protocol
from contract.codes import CallbackEvent
from engine import models
from engine.config import NodeConfig
from engine.files import WRITER_POLL_S, FileBook, TaskDestinations
from engine.status import FileStatus, TaskStatus
from engine.store import AsyncStore, Store, TaskRecord
from storage_adapters.base import StorageAccessDenied, StorageUnavailable
from storage_adapters.destination import Destination
from storage_adapters.memory import MemoryStore
from storage_adapters.spool import Spool
from storage_adapters.uploader import Uploader
from tests.helpers.recorded import FPS, record_clip
from tests.storage.twins import Clock, TwinDestination
from workers.outputs.mp4 import FragmentedMp4Writer

TASK = "T" * 16
SECRET = "s3cret-9d2e"


def request(vendor: int = 1, fmt: str = "hls") -> models.StartRecordRequest:
    storage = {"Vendor": vendor, "Bucket": "media"}
    if vendor:
        storage.update(Region="us-east-1", AccessKeyId="AKID", AccessKeySecret=SECRET)
    return models.parse_start_record({
        "RoomId": "room", "RecordInputParams": {"RecordMode": 1, "RecordStreamList": [{"StreamId": "s"}]},
        "RecordOutputParams": {"OutputFileFormat": fmt, "CallbackUrl": "http://127.0.0.1:1/cb"},
        "StorageParams": storage})


class Node:
    """What engine/node.py wires, with the bucket replaced by the twin."""

    def __init__(self, tmp_path, bucket: MemoryStore | None = None):
        self.config = NodeConfig(data_dir=tmp_path, app_id=1, server_secret="x")
        self.store = AsyncStore(Store(tmp_path / "store.sqlite3"))
        self.bucket = bucket or MemoryStore("media", min_part_size=4)
        self.clock = Clock()
        self.events: list[tuple] = []
        self.destinations = TaskDestinations(self.config, self.store)
        self.uploader = Uploader(Spool(self.config.spool_root, 1 << 30), self._resolve, self._uploaded,
                                 clock=self.clock, jitter=lambda: 1.0)
        self.files = FileBook(self.store, self.destinations, self.uploader, self._emit, readback=self._resolve)

    async def _resolve(self, task_id: str) -> Destination | None:
        destination = await self.destinations.resolve(task_id)
        if destination is None or not destination.is_remote:
            return destination
        return TwinDestination(destination.spec, self.bucket)

    async def _uploaded(self, result) -> None:
        await self.files.object_uploaded(result)

    async def _emit(self, task_id, room_id, url, event_type, message, detail) -> None:
        self.events.append((task_id, event_type, detail.get("file_id")))

    async def start_task(self, req: models.StartRecordRequest) -> Destination:
        await self.store.insert_task(TaskRecord(TASK, None, "room", TaskStatus.RECORDING, req, 1000))
        self.files.register(TASK, req.storage, "room", req.output.callback_url)
        return self.files.destination(TASK, req.storage)

    async def poll(self) -> None:
        await asyncio.gather(*await self.uploader.poll())

    async def status(self) -> dict[str, FileStatus]:
        return {f.file_id: f.status for f in await self.store.files_of_task(TASK)}

    async def close(self) -> None:
        await self.uploader.stop()
        self.store.close()


def opened(file_id: str, fmt: str = "hls", url: str = "") -> protocol.FileOpened:
    return protocol.FileOpened(TASK, file_id, url, fmt, 3, 1_700_000_000_000, 640, 360)


def closed(file_id: str, size: int, ok: bool = True) -> protocol.FileClosed:
    return protocol.FileClosed(TASK, file_id, size, 2000, ok, sha256="ab" * 32)


def write(writer, key: str, data: bytes, part_of: str | None = None) -> None:
    sink = writer.open_object(key, part_of=part_of)
    sink.write(data)
    sink.close()


def on_node(tmp_path, scenario, req: models.StartRecordRequest | None = None, bucket: MemoryStore | None = None):
    """Run `scenario(node, writer)` on a new Node: with `req`, the task is started and
    `writer` is what its worker writes through (else None); the node is closed after."""
    async def main():
        node = Node(tmp_path, bucket)
        try:
            writer = None
            if req is not None:
                writer = Destination((await node.start_task(req)).for_worker()).writer_adapter(TASK)
            await scenario(node, writer)
        finally:
            await node.close()

    asyncio.run(main())


def test_an_hls_file_is_uploaded_once_every_segment_is_in_the_bucket(tmp_path):
    async def scenario(node, writer):
        playlist = "rec/p.m3u8"
        await node.files.opened(opened(playlist), "s", "u", "user")
        # segment keys that share nothing with the playlist's: only the spool says whose they are
        write(writer, "elsewhere/0.ts", b"seg-zero", part_of=playlist)
        write(writer, "elsewhere/1.ts", b"seg-one", part_of=playlist)
        write(writer, playlist, b"#EXTM3U\n")
        node.bucket.fail_next("begin", StorageUnavailable("bucket down"))  # the first object waits
        await node.files.closed(closed(playlist, 23))
        assert (await node.status())[playlist] is FileStatus.UPLOADING
        await node.poll()
        assert len(node.bucket.objects) == 2
        assert (await node.status())[playlist] is FileStatus.UPLOADING  # a segment is still on its way
        node.clock.now = 0.5
        await node.poll()
        assert sorted(node.bucket.objects) == ["elsewhere/0.ts", "elsewhere/1.ts", playlist]
        assert (await node.status())[playlist] is FileStatus.UPLOADED
        [file] = await node.store.files_of_task(TASK)
        assert file.file_url == "https://media.s3.us-east-1.amazonaws.com/rec/p.m3u8"
        assert file.size == 23 and node.events == []  # the final playlist is no realtime event

    on_node(tmp_path, scenario, request())


def test_a_bucket_that_refuses_for_good_fails_the_file(tmp_path):
    async def scenario(node, writer):
        refused, fine = "rec/a.m3u8", "rec/b.mp4"
        await node.files.opened(opened(refused), "s", "u", "user")
        await node.files.opened(opened(fine, "mp4"), "s", "u", "user")
        node.bucket.fail_next("put", StorageAccessDenied("AccessDenied"))
        write(writer, "rec/a_0.ts", b"seg", part_of=refused)  # refused while its file still records
        await node.poll()
        write(writer, refused, b"#EXTM3U\n")
        write(writer, fine, b"mp4 bytes")
        await node.files.closed(closed(refused, 11))
        await node.files.closed(closed(fine, 9))
        await node.poll()
        assert await node.status() == {refused: FileStatus.UPLOAD_FAILED, fine: FileStatus.UPLOADED}
        assert await node.files.wait_settled(TASK)

    on_node(tmp_path, scenario, request())


def test_a_realtime_playlist_upload_is_reported_while_recording(tmp_path):
    async def scenario(node, writer):
        await node.files.opened(opened("rec/p.m3u8"), "s", "u", "user")
        await node.files.opened(opened("rec/v.mp4", "mp4"), "s", "u", "user")
        write(writer, "rec/p.m3u8", b"#EXTM3U\n")  # RealtimeUploadFragment: the playlist so far
        write(writer, "rec/v.mp4", b"not a playlist")
        await node.poll()
        assert node.events == [(TASK, CallbackEvent.PLAYLIST_UPLOADED, "p.m3u8")]  # event 102 names the file

    on_node(tmp_path, scenario, request())


def test_files_on_the_nodes_disk_settle_when_closed_or_when_their_worker_dies(tmp_path):
    async def scenario(node, writer):
        await node.files.opened(opened("rec/a.mp4", "mp4", url="file:///worker"), "s", "u", "user")
        await node.files.opened(opened("rec/b.mp4", "mp4"), "s", "u", "user")
        sink = writer.open_object("rec/b.mp4")
        sink.write(b"12345")  # the worker dies here: its file holds five bytes
        await node.files.closed(closed("rec/a.mp4", 7))
        await node.files.worker_lost(lambda f: True)
        files = {f.file_id: f for f in await node.store.files_of_task(TASK)}
        assert {k: f.status for k, f in files.items()} == {"rec/a.mp4": FileStatus.UPLOADED,
                                                          "rec/b.mp4": FileStatus.UPLOADED}
        assert files["rec/b.mp4"].size == 5
        # stored unsigned, as the node serves it; signed whenever it is handed out
        assert files["rec/a.mp4"].file_url == node.config.base_url + "/recordings/media/rec/a.mp4"
        assert node.uploader.backlog == 0 and not node.config.spool_root.exists()

    on_node(tmp_path, scenario, request(vendor=0))


def test_after_a_restart_uploads_resume_with_the_credentials_from_the_store(tmp_path):
    bucket = MemoryStore("media", min_part_size=4)

    async def first_run(node, writer):
        await node.files.opened(opened("rec/v.mp4", "mp4"), "s", "u", "user")
        write(writer, "rec/v.mp4", b"recorded before the crash")
        # the node dies here: the file stays "recording" in the store, its bytes in the spool

    async def second_run(node, _):
        assert (await node.destinations.resolve(TASK)).spec.target.access_key_secret == SECRET
        assert await node.destinations.resolve("no-such-task") is None
        record = await node.store.get_task(TASK)  # as TaskManager.load registers it
        node.files.register(TASK, record.request.storage, "room", record.request.output.callback_url)
        await node.files.reconcile(await node.store.files_with_status((FileStatus.RECORDING,)))
        assert await node.status() == {"rec/v.mp4": FileStatus.UPLOADING}
        await node.poll()
        assert bucket.objects["rec/v.mp4"] == b"recorded before the crash"
        [file] = await node.files.wait_settled(TASK)  # read back from the bucket: what it holds
        assert file.status is FileStatus.UPLOADED and file.size == len(b"recorded before the crash")

    on_node(tmp_path, first_run, request(fmt="mp4"), bucket)
    for meta in (tmp_path / "spool").glob("*/meta.json"):
        assert SECRET not in meta.read_text()
    on_node(tmp_path, second_run, bucket=bucket)


def test_a_file_left_recording_is_read_back_once_its_writer_has_exited(tmp_path):
    clip = record_clip(FragmentedMp4Writer, tmp_path / "clip", 3.0).read_bytes()
    old_worker = subprocess.Popen(["sleep", "60"])  # the previous run's worker, still finishing its file

    async def first_run(node, writer):
        await node.files.opened(opened("rec/v.mp4", "mp4"), "s", "u", "user", writer_pid=old_worker.pid)
        await node.files.progress(protocol.FileProgress(TASK, "rec/v.mp4", 100, 1000))  # the last report
        write(writer, "rec/v.mp4", clip)  # ... and what it wrote after it

    async def second_run(node, _):
        record = await node.store.get_task(TASK)
        node.files.register(TASK, record.request.storage, "room", record.request.output.callback_url)
        await node.files.reconcile(await node.store.files_with_status((FileStatus.RECORDING,)))
        await asyncio.sleep(3 * WRITER_POLL_S)
        assert await node.status() == {"rec/v.mp4": FileStatus.RECORDING}  # not read while it is written
        old_worker.terminate()
        await asyncio.to_thread(old_worker.wait)
        [file] = await node.files.wait_settled(TASK)
        assert file.status is FileStatus.UPLOADED and not file.unsettled
        assert file.size == len(clip) and abs(file.duration_ms - 3000) <= 1000 / FPS

    try:
        on_node(tmp_path, first_run, request(vendor=0, fmt="mp4"))
        on_node(tmp_path, second_run)
    finally:
        old_worker.kill()
        old_worker.wait()


def test_ended_tasks_keep_no_credentials_once_their_files_are_settled(tmp_path):
    async def scenario(node, writer):
        await node.files.opened(opened("rec/v.mp4", "mp4"), "s", "u", "user")
        write(writer, "rec/v.mp4", b"the recording")
        await node.files.closed(closed("rec/v.mp4", 13))
        await node.store.update_task(TASK, status=TaskStatus.ENDED)
        await node.files.reconcile([])  # a restart: its upload is still pending, the credentials stay
        assert (await node.store.get_task(TASK)).request.storage.access_key_secret == SECRET
        await node.poll()
        await node.files.wait_settled(TASK)
        await node.files.reconcile([])  # the next start: ended, every file settled, nothing needs them
        storage = (await node.store.get_task(TASK)).request.storage
        assert (storage.access_key_id, storage.access_key_secret) == ("", "")

    on_node(tmp_path, scenario, request(fmt="mp4"))
