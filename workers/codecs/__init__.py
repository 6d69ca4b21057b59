"""Codec knowledge, one module per codec; the video codecs behind `base.VideoCodec`."""

from workers.codecs.base import VideoCodec
from workers.codecs.h264 import H264Codec
from workers.codecs.h265 import H265Codec
from workers.codecs.vp8 import Vp8Codec

VIDEO_CODECS: dict[str, type[VideoCodec]] = {codec.name: codec for codec in (H264Codec, H265Codec, Vp8Codec)}


def video_codec(name: str) -> type[VideoCodec]:
    """The codec of a TrackSpec.codec / rtpmap name (case-insensitive); ValueError if we have none."""
    try:
        return VIDEO_CODECS[name.upper()]
    except KeyError:
        raise ValueError(f"unsupported video codec {name!r}") from None
