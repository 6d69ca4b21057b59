"""Reading stored objects back, to learn what a file a worker could not finish
really holds (engine.settle). Every read is a ranged read where the objects end
up (the node's disk, or the bucket: one GET each); reads that follow each other
fetch more at a time, and one file's reads share a budget, so a huge or
malformed object costs a bounded amount of I/O. Blocks: call from a thread."""

from __future__ import annotations

from storage_adapters.base import StorageAdapter, StorageError

FIRST_FETCH = 8 * 1024  # a box header, an fMP4 fragment's moof, a TS segment's first packets
MAX_FETCH = 4 * 1024 * 1024  # what sequential reads grow to


class ReadBudgetExceeded(StorageError):
    """Measuring a file would read more than its budget allows."""


class ReadBudget:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.spent = 0
        self.requests = 0

    def spend(self, length: int) -> None:
        if self.spent + length > self.max_bytes:
            raise ReadBudgetExceeded(f"reading back would exceed {self.max_bytes} bytes")
        self.spent += length
        self.requests += 1


class StoredObject:
    """One stored object, read at any offset. `open` gives None for a missing one."""

    def __init__(self, adapter: StorageAdapter, key: str, budget: ReadBudget, first: bytes, size: int):
        self._adapter = adapter
        self.key = key
        self.size = size
        self._budget = budget
        self._cached_at, self._cached = 0, first
        self._next_fetch = FIRST_FETCH

    @classmethod
    def open(cls, adapter: StorageAdapter, key: str, budget: ReadBudget) -> StoredObject | None:
        budget.spend(FIRST_FETCH)
        found = adapter.read_range(key, 0, FIRST_FETCH)
        return None if found is None else cls(adapter, key, budget, *found)

    def read(self, start: int, length: int) -> bytes:
        """Up to `length` bytes from `start` (fewer at the end)."""
        length = max(0, min(length, self.size - start))
        end = start + length
        cached_end = self._cached_at + len(self._cached)
        if self._cached_at <= start and end <= cached_end:
            return self._cached[start - self._cached_at:end - self._cached_at]
        sequential = self._cached_at <= start <= cached_end
        self._next_fetch = min(MAX_FETCH, self._next_fetch * 2) if sequential else FIRST_FETCH
        fetch = min(max(length, self._next_fetch), self.size - start)
        self._budget.spend(fetch)
        found = self._adapter.read_range(self.key, start, fetch)
        if found is None:
            raise StorageError(f"{self.key!r} disappeared while it was read back")
        self._cached_at, self._cached = start, found[0]
        return self._cached[:length]
