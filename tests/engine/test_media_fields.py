"""StartRecord's fields for pictures and MP3 (the hosted StartRecord reference):
SnapshotInterval 5..3600 (default 10), jpg not with StreamType 1, mp3 not with
StreamType 2, RecordMuteAudio 1 or 2, RecordMuteAudioSplitThreshold (negative or
absent: no split), and the node's --mp4-audio."""

import copy

import pytest

from engine import config, models, options
from engine.errors import InvalidParameter
from tests.engine.test_models import VALID

OUT = ("RecordOutputParams",)
IN = ("RecordInputParams",)


def parse(*changes):
    body = copy.deepcopy(VALID)
    for path, value in changes:
        target = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return models.parse_start_record(body)


def test_jpg_takes_a_snapshot_interval_from_5_to_3600_s():
    assert parse((OUT + ("OutputFileFormat",), "jpg")).output.snapshot_interval == 10
    longest = parse((OUT + ("OutputFileFormat",), "jpg"), (OUT + ("SnapshotInterval",), 3600))
    assert longest.output.snapshot_interval == 3600
    for bad in (4, 3601, "10", 2.5):
        with pytest.raises(InvalidParameter, match="RecordOutputParams.SnapshotInterval"):
            parse((OUT + ("OutputFileFormat",), "jpg"), (OUT + ("SnapshotInterval",), bad))


def test_formats_refuse_the_stream_type_they_cannot_record():
    with pytest.raises(InvalidParameter, match="jpg.*StreamType 1"):
        parse((OUT + ("OutputFileFormat",), "jpg"), (IN + ("StreamType",), 1))
    with pytest.raises(InvalidParameter, match="mp3.*StreamType 2"):
        parse((OUT + ("OutputFileFormat",), "mp3"), (IN + ("StreamType",), 2))
    for stream_type in (1, 3, 4):
        audio = parse((OUT + ("OutputFileFormat",), "mp3"), (IN + ("StreamType",), stream_type))
        assert audio.output.output_format == "mp3"
    with pytest.raises(InvalidParameter, match="OutputFileFormat must be one of mp4, flv, hls, jpg, mp3"):
        parse((OUT + ("OutputFileFormat",), "wav"))


def test_mute_audio_fields():
    default = parse().input
    assert (default.record_mute_audio, default.mute_split_threshold) == (1, None)
    skip = parse((IN + ("RecordMuteAudio",), 2), (IN + ("RecordMuteAudioSplitThreshold",), 0)).input
    assert (skip.record_mute_audio, skip.mute_split_threshold) == (2, 0)
    assert parse((IN + ("RecordMuteAudioSplitThreshold",), -5)).input.mute_split_threshold is None
    with pytest.raises(InvalidParameter, match="RecordInputParams.RecordMuteAudio must be one of 1, 2"):
        parse((IN + ("RecordMuteAudio",), 0))
    with pytest.raises(InvalidParameter, match="RecordInputParams.RecordMuteAudioSplitThreshold"):
        parse((IN + ("RecordMuteAudioSplitThreshold",), "3"))


def test_mp4_audio_option(monkeypatch):
    parser_args = type("Args", (), {o.dest: None for o in options.SERVE_OPTIONS})()
    monkeypatch.setenv("RECNODE_SERVER_SECRET", "x")
    assert options.resolve(parser_args, options.SERVE_OPTIONS, {})["mp4_audio"] == "opus"
    monkeypatch.setenv("RECNODE_MP4_AUDIO", "AAC")
    assert options.resolve(parser_args, options.SERVE_OPTIONS, {})["mp4_audio"] == "aac"
    monkeypatch.setenv("RECNODE_MP4_AUDIO", "mp3")
    with pytest.raises(options.ConfigError, match="--mp4-audio / RECNODE_MP4_AUDIO: 'mp3' is not an MP4 audio codec"):
        options.resolve(parser_args, options.SERVE_OPTIONS, {})
    assert config.NodeConfig.__dataclass_fields__["mp4_audio"].default == "opus"
