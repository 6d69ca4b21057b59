"""The node's uploader against the in-memory bucket twin: a real spool on tmp_path,
an injected clock, no sockets and no sleeps."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import replace

import pytest

from storage_adapters.base import StorageAccessDenied, StorageUnavailable
from storage_adapters.memory import MemoryStore
from storage_adapters.spool import Spool, SpoolAdapter
from storage_adapters.uploader import BACKOFF_FIRST_S, BACKOFF_MAX_S, Uploader, UploadResult, backoff_s
from tests.storage.twins import Clock, twin_destination

TASK = "T" * 16


class Observed:
    """The uploader's observer (the node's metrics), as a list of what it was told."""

    def __init__(self):
        self.told: list[tuple] = []

    def sent(self, vendor, size):
        self.told.append(("sent", vendor, size))

    def uploaded(self, vendor):
        self.told.append(("uploaded", vendor))

    def retried(self, vendor):
        self.told.append(("retried", vendor))

    def failed(self, vendor):
        self.told.append(("failed", vendor))

    def count(self, what: str) -> int:
        return sum(1 for t in self.told if t[0] == what)


class Harness:
    def __init__(self, tmp_path, known_tasks=(TASK,)):
        self.spool = Spool(tmp_path / "spool", 1 << 30)
        self.bucket = MemoryStore("media", min_part_size=4)
        self.destination = twin_destination(self.spool.root, self.bucket)
        self.clock = Clock()
        self.results: list[UploadResult] = []
        self.known_tasks = known_tasks
        self.seen = Observed()
        self.uploader = Uploader(self.spool, self._resolve, self._done, clock=self.clock, jitter=lambda: 1.0,
                                 observer=self.seen)
        self.writer = SpoolAdapter(self.spool, TASK)

    async def _resolve(self, task_id):
        return self.destination if task_id in self.known_tasks else None

    async def _done(self, result):
        self.results.append(result)

    def spooled(self, key: str, data: bytes, part_of: str | None = None, close: bool = True):
        sink = self.writer.open_object(key, part_of=part_of)
        sink.write(data)
        if close:
            sink.close()
        return sink

    async def poll(self) -> int:
        """One uploader round, waited for; how many entries it worked on."""
        started = await self.uploader.poll()
        await asyncio.gather(*started)
        return len(started)

    def calls(self, op: str) -> int:
        return sum(1 for call in self.bucket.calls if call[0] == op)


def test_backoff_doubles_from_half_a_second_to_thirty():
    assert [backoff_s(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert BACKOFF_FIRST_S == 0.5 and BACKOFF_MAX_S == 30


def test_an_unreachable_bucket_is_retried_with_backoff_until_it_answers(tmp_path):
    h = Harness(tmp_path)
    data = b"abc"  # under one part: a single put at close
    h.spooled("rec/a.mp4", data)
    for _ in range(3):
        h.bucket.fail_next("put", StorageUnavailable("bucket down"))

    async def scenario():
        attempts_at = []
        for now in (0.0, 0.49, 0.5, 1.49, 1.5, 3.49, 3.5):
            h.clock.now = now
            if await h.poll():
                attempts_at.append(now)
        return attempts_at

    assert asyncio.run(scenario()) == [0.0, 0.5, 1.5, 3.5]  # waits of 0.5, 1 and 2 s
    assert h.calls("put") == 4
    assert h.bucket.objects["rec/a.mp4"] == data
    assert h.results == [UploadResult(TASK, "rec/a.mp4", "rec/a.mp4", True)]
    assert h.spool.entries() == [] and h.uploader.backlog == 0
    vendor = h.destination.spec.target.vendor
    assert (h.seen.count("retried"), h.seen.count("uploaded"), h.seen.count("failed")) == (3, 1, 0)
    assert ("uploaded", vendor) in h.seen.told and sum(t[2] for t in h.seen.told if t[0] == "sent") == len(data)


def test_an_object_goes_up_in_parts_while_it_is_written(tmp_path):
    h = Harness(tmp_path)
    sink = h.spooled("rec/a.mp4", b"0123456789", close=False)

    async def scenario():
        await h.poll()
        [(key, parts)] = h.bucket.uploads.values()
        assert key == "rec/a.mp4" and sorted(parts) == [1, 2]  # two full 4-byte parts, before the close
        assert h.results == [] and h.uploader.pending_files() == {"rec/a.mp4"}
        sink.write(b"ab")
        sink.close()
        await h.poll()

    asyncio.run(scenario())
    assert h.bucket.objects["rec/a.mp4"] == b"0123456789ab" and h.bucket.pending_uploads() == []
    assert [r.ok for r in h.results] == [True]


def test_bytes_that_do_not_match_the_workers_sha256_are_never_uploaded_as_good(tmp_path):
    h = Harness(tmp_path)
    data = b"0123456789abcdef"
    sink = h.spooled("rec/a.mp4", data)
    assert sink.entry.read_meta().sha256 == hashlib.sha256(data).hexdigest()
    with open(sink.entry.data_path, "r+b") as f:  # the disk changed a byte behind the worker's back
        f.seek(5)
        f.write(b"X")
    asyncio.run(h.poll())
    [result] = h.results
    assert not result.ok and "SHA-256" in result.error
    assert "rec/a.mp4" not in h.bucket.objects
    assert h.bucket.pending_uploads() == []  # the parts already sent were aborted
    [entry] = h.spool.entries()  # the media stays on the node's disk, marked failed
    assert entry.read_meta().failed and entry.data_path.read_bytes()[5:6] == b"X"
    assert h.uploader.failed_files() == {"rec/a.mp4"} and h.uploader.pending_files() == set()
    asyncio.run(h.poll())
    assert len(h.results) == 1  # a failed entry is not tried again


@pytest.mark.parametrize("known", [True, False])
def test_a_refusal_for_good_fails_the_entry_and_keeps_it(tmp_path, known):
    h = Harness(tmp_path, known_tasks=(TASK,) if known else ())
    h.bucket.fail_next("put", StorageAccessDenied("InvalidAccessKeyId"))
    h.spooled("rec/a_1.ts", b"seg", part_of="rec/a.m3u8")
    asyncio.run(h.poll())
    [result] = h.results
    assert (result.task_id, result.file_id, result.key, result.ok) == (TASK, "rec/a.m3u8", "rec/a_1.ts", False)
    assert ("InvalidAccessKeyId" if known else "unknown to this node") in result.error
    assert h.bucket.objects == {} and h.uploader.failed_files() == {"rec/a.m3u8"}
    [entry] = h.spool.entries()
    assert entry.data_path.read_bytes() == b"seg"
    vendor = h.destination.spec.target.vendor if known else None
    assert [t for t in h.seen.told if t[0] != "sent"] == [("failed", vendor)]


def test_results_name_the_file_each_object_belongs_to(tmp_path):
    h = Harness(tmp_path)
    h.spooled("segments/x_0.ts", b"s0", part_of="rec/p.m3u8")
    h.spooled("rec/p.m3u8", b"#EXTM3U")
    h.spooled("rec/v.mp4", b"mp4", close=False)
    asyncio.run(h.uploader.refresh())
    assert h.uploader.pending_files() == {"rec/p.m3u8", "rec/v.mp4"} and h.uploader.backlog == 3
    asyncio.run(h.poll())
    assert {(r.key, r.file_id) for r in h.results} == {("segments/x_0.ts", "rec/p.m3u8"),
                                                       ("rec/p.m3u8", "rec/p.m3u8")}
    assert h.uploader.pending_files() == {"rec/v.mp4"}


def test_a_scan_that_raced_an_upload_does_not_undo_its_result(tmp_path):
    """A spool scan reads entries on a thread while uploads finish on others: one that
    read an entry just before its upload finished must not bring it back."""
    h = Harness(tmp_path)
    h.spooled("rec/a.mp4", b"abc")
    h.spooled("rec/b.mp4", b"def")
    h.bucket.fail_next("put", StorageAccessDenied("AccessDenied"))  # whichever goes first is refused

    async def scenario():
        stale = h.uploader._scan()  # what a slow scan started before the uploads holds
        await h.poll()
        h.uploader._scan = lambda: {entry_id: (entry, replace(meta)) for entry_id, (entry, meta) in stale.items()}
        await h.uploader.refresh()  # ... and it returns only now

    asyncio.run(scenario())
    [refused] = [r.file_id for r in h.results if not r.ok]
    assert h.uploader.pending_files() == set() and h.uploader.failed_files() == {refused}
