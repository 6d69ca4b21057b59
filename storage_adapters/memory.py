"""The in-memory twin of a storage adapter, for unit tests."""

from __future__ import annotations

from storage_adapters.base import ObjectSink, StorageAdapter, StorageError


class MemorySink(ObjectSink):
    def __init__(self, key: str, adapter: MemoryAdapter):
        super().__init__(key)
        self._adapter = adapter
        self._buffer = bytearray()
        adapter.partial[key] = self._buffer

    def _write(self, data: bytes) -> None:
        if self._adapter.fail_writes:
            raise StorageError("memory adapter told to fail")
        self._buffer += data

    def _complete(self) -> None:
        self._adapter.objects[self.key] = bytes(self._buffer)
        self._adapter.partial.pop(self.key, None)

    def abort(self) -> None:
        self._adapter.partial.pop(self.key, None)


class MemoryAdapter(StorageAdapter):
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.partial: dict[str, bytearray] = {}
        self.fail_writes = False

    def open_object(self, key: str) -> MemorySink:
        return MemorySink(key, self)

    def object_url(self, key: str) -> str:
        return f"memory://{key}"

    def object_size(self, key: str) -> int | None:
        if key in self.objects:
            return len(self.objects[key])
        if key in self.partial:
            return len(self.partial[key])
        return None
