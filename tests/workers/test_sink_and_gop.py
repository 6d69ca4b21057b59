from concurrent.futures import ThreadPoolExecutor

from contract.codes import MediaKind
from storage_adapters.memory import MemoryAdapter
from workers.frames import EncodedFrame
from workers.gop import GopCache
from workers.sink import StreamingObject


def test_streaming_object_hands_bytes_over_in_order():
    adapter = MemoryAdapter()
    with ThreadPoolExecutor(1) as uploader:
        out = StreamingObject("k", lambda: adapter.open_object("k"), uploader)
        for i in range(100):
            out.write(bytes([i]) * 10)
            if i % 7 == 0:
                out.pump()
        info = out.close().result()
    assert adapter.objects["k"] == b"".join(bytes([i]) * 10 for i in range(100))
    assert info.size == out.durable_bytes == out.written_bytes == 1000


def test_streaming_object_reports_storage_failure():
    adapter = MemoryAdapter()
    with ThreadPoolExecutor(1) as uploader:
        out = StreamingObject("k", lambda: adapter.open_object("k"), uploader)
        out.write(b"a")
        out.pump()
        adapter.fail_writes = True
        out.write(b"b")
        assert out.close().result() is None
    assert out.error is not None and "k" not in adapter.objects


def v(t, key=False):
    return EncodedFrame(MediaKind.VIDEO, b"v", int(t * 90000), t, key)


def a(t):
    return EncodedFrame(MediaKind.AUDIO, b"a", int(t * 48000), t)


def test_gop_keeps_from_the_latest_key_frame_and_a_little_audio_before():
    cache = GopCache(has_video=True)
    for frame in [a(0.0), v(0.0, True), a(0.5), v(0.5), a(1.6), v(2.0, True), a(2.2), v(2.1)]:
        cache.add(frame)
    kept = cache.frames()
    assert [f.arrival for f in kept if f.kind is MediaKind.VIDEO] == [2.0, 2.1]
    assert [f.arrival for f in kept if f.kind is MediaKind.AUDIO] == [1.6, 2.2]


def test_gop_holds_older_gops_while_a_recording_waits():
    cache = GopCache(has_video=True)
    cache.add(v(0.0, True), hold=True)
    cache.add(v(1.0, True), hold=True)
    cache.add(v(1.1), hold=True)
    assert [f.arrival for f in cache.frames()] == [0.0, 1.0, 1.1]
    cache.add(v(2.0, True))
    assert [f.arrival for f in cache.frames()] == [2.0]


def test_gop_longer_than_the_cache_is_forgotten():
    cache = GopCache(has_video=True, max_s=1.0)
    cache.add(v(0.0, True))
    cache.add(v(0.5))
    assert cache.has_keyframe
    cache.add(v(1.5))
    assert not cache.has_keyframe and cache.frames() == []


def test_audio_only_stream_keeps_nothing():
    cache = GopCache(has_video=False)
    cache.add(a(0.0))
    assert cache.frames() == [] and not cache.has_keyframe
