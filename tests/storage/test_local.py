import stat

import pytest

from contract.storage import StorageTarget
from storage_adapters.base import InvalidObjectKey, StorageError
from storage_adapters.local import LocalAdapter
from storage_adapters.memory import MemoryAdapter
from storage_adapters.vendors import adapter_for


def test_objects_are_files_under_root_bucket_key(tmp_path):
    adapter = LocalAdapter(tmp_path, "bucket")
    sink = adapter.open_object("rec/a.mp4")
    sink.write(b"abc")
    sink.write(b"def")
    info = sink.close()
    path = tmp_path / "bucket" / "rec" / "a.mp4"
    assert path.read_bytes() == b"abcdef"
    assert info.size == 6 and info.sha256 == __import__("hashlib").sha256(b"abcdef").hexdigest()
    assert adapter.object_size("rec/a.mp4") == 6 and adapter.object_size("rec/none") is None
    assert adapter.object_url("rec/a.mp4") == path.as_uri()
    assert stat.S_IMODE(path.stat().st_mode) & 0o002 == 0


def test_bytes_are_on_disk_before_close(tmp_path):
    sink = LocalAdapter(tmp_path, "b").open_object("x")
    sink.write(b"12345")
    assert (tmp_path / "b" / "x").read_bytes() == b"12345"
    sink.abort()
    assert (tmp_path / "b" / "x").read_bytes() == b"12345"  # a partial recording is kept


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/passwd", ""])
def test_keys_cannot_leave_the_bucket(tmp_path, key):
    with pytest.raises(InvalidObjectKey):
        LocalAdapter(tmp_path, "b").open_object(key)


def test_bucket_cannot_leave_the_root(tmp_path):
    with pytest.raises(InvalidObjectKey):
        LocalAdapter(tmp_path / "root", "..")


def test_vendor_table(tmp_path):
    assert isinstance(adapter_for(StorageTarget(0, "b", local_root=str(tmp_path))), LocalAdapter)
    with pytest.raises(StorageError):
        adapter_for(StorageTarget(0, "b"))
    with pytest.raises(StorageError, match="Vendor 4"):
        adapter_for(StorageTarget(4, "b"))


def test_memory_twin_keeps_partial_then_complete():
    adapter = MemoryAdapter()
    sink = adapter.open_object("k")
    sink.write(b"ab")
    assert adapter.object_size("k") == 2 and "k" not in adapter.objects
    sink.close()
    assert adapter.objects["k"] == b"ab"


def test_storage_target_repr_hides_credentials():
    target = StorageTarget(1, "b", access_key_id="AKID", access_key_secret="very-secret")
    assert "very-secret" not in repr(target) and "AKID" not in repr(target)
