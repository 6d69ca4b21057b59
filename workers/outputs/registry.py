"""Which files a task's recording of a stream writes, and with which writer: by
OutputFileFormat and StreamType. StreamType 4 fans out to two files (video; audio
as .aac or an audio-only HLS playlist); mp3 records the audio whatever the
StreamType (2 is refused at the API); VP8 video goes into WebM whatever container
was asked for: none of the others can hold it."""

from __future__ import annotations

from contract.codes import MediaKind
from workers.outputs.adts import AdtsWriter
from workers.outputs.base import ContainerWriter
from workers.outputs.flv import FlvWriter
from workers.outputs.hls import HlsWriter
from workers.outputs.mp3 import Mp3Writer
from workers.outputs.mp4 import FragmentedMp4Writer
from workers.outputs.params import VideoParams
from workers.outputs.webm import WebmWriter

WRITERS: dict[str, type[ContainerWriter]] = {"mp4": FragmentedMp4Writer, "flv": FlvWriter, "hls": HlsWriter,
                                             "mp3": Mp3Writer}
# StreamType 4: where the audio of each format goes
SEPARATE_AUDIO_WRITERS: dict[str, type[ContainerWriter]] = {"mp4": AdtsWriter, "flv": AdtsWriter, "hls": HlsWriter}
STREAM_KINDS = {1: ({MediaKind.AUDIO},), 2: ({MediaKind.VIDEO},), 3: ({MediaKind.VIDEO, MediaKind.AUDIO},),
                4: ({MediaKind.VIDEO}, {MediaKind.AUDIO})}
AUDIO_ONLY_FORMATS = ("mp3",)


def file_kinds(output_format: str, stream_type: int, present: set[MediaKind]) -> list[frozenset[MediaKind]]:
    """What each file holds, of the tracks `present` in the stream (none: nothing to record)."""
    asked = ({MediaKind.AUDIO},) if output_format in AUDIO_ONLY_FORMATS else STREAM_KINDS[stream_type]
    return [frozenset(k & present) for k in asked if k & present]


def writer_type(output_format: str, index: int, kinds: frozenset[MediaKind],
                video: VideoParams | None) -> type[ContainerWriter]:
    """The writer of file `index`: the asked-for container, or WebM for video none of them can hold (VP8)."""
    if index > 0:
        return SEPARATE_AUDIO_WRITERS[output_format]
    asked = WRITERS[output_format]
    if MediaKind.VIDEO in kinds and video is not None and video.codec not in asked.video_codecs:
        return WebmWriter
    return asked
