"""JPEG pictures of a video stream (snapshots): the one place the node decodes video.

A picture is decoded from a key frame up to the frame it shows, never more of the
stream, by a decoder that belongs to one snapshot task (made for its first picture,
freed with the task), and encoded as a baseline JPEG (mjpeg, full-range yuvj420p),
which every image viewer opens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import av

# mjpeg's quantizer, fixed (2 best .. 31 worst): ~FFmpeg's `-q:v 3`, whatever the size,
# where its rate control would squeeze a large picture into its default bit rate.
JPEG_QUANTIZER = 3


@dataclass(frozen=True)
class Picture:
    jpeg: bytes
    width: int
    height: int


def encode_jpeg(frame: av.VideoFrame) -> Picture:
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height = frame.width, frame.height
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = 1
    encoder.qmin = encoder.qmax = JPEG_QUANTIZER
    packets = encoder.encode(frame.reformat(format="yuvj420p"))
    return Picture(b"".join(bytes(p) for p in packets), frame.width, frame.height)


class PictureMaker:
    """Turns the frames from a key frame to the one wanted into a JPEG of that one.
    Used from one thread at a time; `close` frees the decoder."""

    def __init__(self, codec: str):
        self._codec = codec  # FFmpeg's decoder name: "h264", "vp8"
        self._decoder: av.CodecContext | None = None

    def picture(self, frames: Sequence[bytes]) -> Picture:
        """`frames`: a key frame, then the frames after it in order; the picture is the
        last. ValueError when nothing decodes."""
        if self._decoder is None:
            self._decoder = av.CodecContext.create(self._codec, "r")
            self._decoder.thread_count = 1  # a frame out per frame in: no frame-thread delay
        decoded: list[av.VideoFrame] = []
        try:
            for data in frames:
                decoded.extend(self._decoder.decode(av.Packet(data)))
            decoded.extend(self._decoder.decode(None))  # a decoder that holds frames back lets go
        except av.FFmpegError as error:
            raise ValueError(f"the video does not decode: {error}") from None
        finally:
            self._decoder.flush_buffers()  # the next picture starts from its own key frame
        if not decoded:
            raise ValueError("the video does not decode: no picture")
        return encode_jpeg(decoded[-1])

    def close(self) -> None:
        self._decoder = None
