"""HLS: MPEG-TS segments of about FragmentSeconds (cut on key frames) and an m3u8.

Every object goes through PyAV's io_open hook: a segment is uploaded as the
muxer writes it and is complete when the muxer closes it. While recording the
playlist is an EVENT playlist (uploaded after each segment when asked for);
the final one is a VOD playlist listing every segment.

FFmpeg lists the last segment as the sum of its video packets' durations (the
others by the next segment's start). A video frame's duration is known only when
the next one comes, so each is held back until then; the last one gets its
predecessor's. Without that, a last segment of one frame was `#EXTINF:0.000000`.

FFmpeg cuts a segment only on a video key frame. Browsers send one about every
30 s unless asked, so the writer tells when the next cut is due and no key frame
has come (`keyframe_due`): the worker then asks the publisher for one.
"""

from __future__ import annotations

import av

from workers.outputs.base import ContainerWriter
from workers.outputs.params import VIDEO_TIME_BASE

SEGMENT_EXTENSION = "ts"
# For a file: URL FFmpeg writes a non-VOD playlist to a temp file and renames it
# outside io_open; a protocol it does not know keeps every write in io_open.
PLAYLIST_URL_PREFIX = "recnode-object:"


class _PlaylistBuffer:
    """The muxer rewrites the playlist after each segment: keep the latest text."""

    def __init__(self, on_close):
        self._data = bytearray()
        self._on_close = on_close

    def write(self, data: bytes) -> int:
        self._data += data
        return len(data)

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self._on_close(bytes(self._data))


class SegmentCuts:
    """Where FFmpeg's HLS muxer cuts (libavformat/hlsenc.c): at the first video key
    frame whose pts, from the first packet's, reaches `n` times the target, `n`
    counting the segments begun so far; so the cuts aim at multiples of the target."""

    def __init__(self, target_s: int):
        self._target = target_s * VIDEO_TIME_BASE.denominator
        self._start: int | None = None
        self._segment = 1  # the segment being written, from 1
        self._latest = 0
        self._asked = 0  # the last segment a key frame was asked for

    def on_video(self, pts: int, keyframe: bool) -> None:
        if self._start is None:
            self._start = pts
        elif keyframe and pts - self._start >= self._segment * self._target:
            self._segment += 1
        self._latest = pts

    def keyframe_due(self) -> bool:
        """True once per segment, when its end is reached and no key frame has cut it."""
        if self._start is None or self._asked == self._segment:
            return False
        if self._latest - self._start < self._segment * self._target:
            return False
        self._asked = self._segment
        return True


class HlsWriter(ContainerWriter):
    extension = "m3u8"
    output_format = "hls"
    on_playlist = None  # called after each realtime playlist upload is queued

    def _open_container(self) -> av.container.OutputContainer:
        self.cuts = SegmentCuts(self.options.fragment_seconds)
        self.playlist = b""
        self._held: tuple[bytes, int, bool] | None = None  # the last video frame: (data, pts, keyframe)
        self._frame_ticks = 0  # the last video frame interval
        self.segments: list[str] = []
        self._closing = False
        options = {
            "hls_time": str(self.options.fragment_seconds),
            "hls_list_size": "0",
            "hls_playlist_type": "event",
            # FFmpeg expands %d in the pattern: escape the %XX of escaped identifiers.
            "hls_segment_filename": self.stem.replace("%", "%%") + f"_%d.{SEGMENT_EXTENSION}",
            "max_interleave_delta": "1000000",
        }
        if not self.options.short_segment_paths and not self.objects.served_by_node:
            # the URL of the key prefix: a name's URL with a one-letter name, less the letter
            # (the adapter may percent-encode a name, so the name's length cannot be cut off)
            options["hls_base_url"] = self.objects.url("x")[:-1]
        return av.open(PLAYLIST_URL_PREFIX + self.name, "w", format="hls", options=options,
                       io_open=self._io_open)

    def keyframe_due(self) -> bool:
        return self.cuts.keyframe_due()

    def _io_open(self, url: str, flags: int, options: dict):
        if url == PLAYLIST_URL_PREFIX + self.name:
            return _PlaylistBuffer(self._playlist_written)
        if url.startswith(PLAYLIST_URL_PREFIX) or "/" in url:
            raise ValueError(f"unexpected HLS object {url!r}")
        name = url.replace("%%", "%")  # FFmpeg keeps the pattern's escaped '%' doubled
        self.segments.append(name)
        return self.objects.open(name, part_of=self.name)  # the spool tells the uploader whose segment it is

    def _playlist_written(self, text: bytes) -> None:
        self.playlist = text = text.replace(b"%%", b"%")  # segments listed by their names
        # On the node's disk the playlist is kept current anyway: it is watched live over HTTP.
        if (self.options.realtime_playlist or self.objects.served_by_node) and not self._closing:
            self.objects.put(self.name, text)
            if self.options.realtime_playlist and self.on_playlist is not None:
                self.on_playlist()

    def write_video(self, data: bytes, pts: int, keyframe: bool) -> None:
        if self._held is not None:
            self._frame_ticks = pts - self._held[1]
            self._write_held()
        self._held = (data, pts, keyframe)
        self.cuts.on_video(pts, keyframe)

    def _write_held(self) -> None:
        assert self._held is not None
        data, pts, keyframe = self._held
        self._held = None
        self._mux(self._video_stream, data, pts, VIDEO_TIME_BASE, keyframe, self._frame_ticks or None)

    def close(self) -> None:
        if self._held is not None:
            self._write_held()
        self._closing = True  # the last playlist goes up once, as VOD, from _finish
        super().close()

    def _finish(self) -> None:
        final = self.playlist.replace(b"#EXT-X-PLAYLIST-TYPE:EVENT", b"#EXT-X-PLAYLIST-TYPE:VOD")
        if b"#EXT-X-ENDLIST" not in final:
            final += b"#EXT-X-ENDLIST\n"
        self.objects.put(self.name, final)
