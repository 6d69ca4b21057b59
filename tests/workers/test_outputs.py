"""Container writers: codec guards and the Opus -> AAC path."""

from concurrent.futures import ThreadPoolExecutor

import av
import numpy as np
import pytest

from storage_adapters.memory import MemoryAdapter
from tests.helpers.media import make_test_media
from workers.codecs import opus
from workers.outputs.adts import AdtsWriter
from workers.outputs.base import AudioParams, VideoParams
from workers.outputs.flv import FlvWriter
from workers.outputs.hls import HlsWriter
from workers.outputs.mp4 import FragmentedMp4Writer
from workers.sink import FileObjects

OPUS = AudioParams("opus", 48000, 2, opus.opus_head(2))


@pytest.fixture
def objects():
    with ThreadPoolExecutor(1) as uploader:
        adapter = MemoryAdapter()
        yield FileObjects(adapter, "f/", uploader), adapter


@pytest.mark.parametrize("writer", [FlvWriter, HlsWriter, FragmentedMp4Writer, AdtsWriter])
def test_codecs_a_container_cannot_take_are_refused_before_ffmpeg(objects, writer):
    with pytest.raises(ValueError):
        writer(objects[0], "s", VideoParams("vp8", 64, 64), None)
    with pytest.raises(ValueError):
        writer(objects[0], "s", None, AudioParams("pcm_s16le", 48000, 2, b""))


def test_adts_takes_no_video(objects):
    with pytest.raises(ValueError):
        AdtsWriter(objects[0], "s", VideoParams("h264", 64, 64), None)


def decoded_samples(data: bytes, tmp_path) -> np.ndarray:
    path = tmp_path / "a.aac"
    path.write_bytes(data)
    with av.open(str(path)) as container:
        return np.concatenate([f.to_ndarray()[0] for f in container.decode(audio=0)])


def test_a_gap_in_opus_becomes_silence_in_aac(objects, tmp_path):
    files, adapter = objects
    media = make_test_media(3.0)
    writer = AdtsWriter(files, "s", None, OPUS)
    packets = [p for p in media.audio if not 1.0 <= p.time_s < 1.5]  # half a second never arrived
    for packet in packets:
        writer.write_audio(packet.data, round((packet.time_s + 0.0065) * 48000), 960)
    writer.close()
    for future in files.close():
        future.result()
    samples = decoded_samples(adapter.objects["f/s.aac"], tmp_path)
    # the timeline stays whole: 3 s of audio (plus encoder priming/padding), silence over the gap
    sent = len(media.audio) * 960  # every packet's span, the missing ones included
    assert sent + 1024 <= len(samples) <= sent + 2 * 1024  # + encoder priming, + padding of the last frame
    priming = 1024
    gap = samples[priming + int(1.05 * 48000): priming + int(1.45 * 48000)]
    assert np.abs(gap).max() < 1e-3
    assert np.abs(samples[priming + int(1.5 * 48000):]).max() > 0.1  # the beep at 2.5 s is there
