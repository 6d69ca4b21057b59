"""What a file whose worker never said it closed really is, read from storage.

A worker killed, or a node killed under its workers, leaves files whose last
FileProgress is stale: the bytes written after it, and the trailer or final
playlist its worker wrote on the way out (or could not write), are only in
storage. Once every object of such a file is where it ends up (the node's disk,
or the bucket after the uploader), `measure` reads them back (ranged reads,
engine.media_span, a byte budget per file) and answers its FileSize (for HLS:
the playlist and every segment) and its Duration. An HLS playlist that does not
list every stored segment with its true duration (the worker died before writing
the final one) is written again from the segments. Blocks: call from a thread.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from engine import media_span
from storage_adapters.destination import Destination
from storage_adapters.readback import ReadBudget, ReadBudgetExceeded, StoredObject

log = structlog.get_logger("settle")

PLAYLIST_EXTENSION = ".m3u8"
SEGMENT_EXTENSION = ".ts"  # workers.outputs.hls names segment i of <stem>.m3u8 <stem>_<i>.ts
_EXTINF = re.compile(r"#EXTINF:([\d.]+),")


@dataclass(frozen=True)
class Stored:
    size: int  # bytes stored: the object, or an HLS playlist and its segments
    duration_ms: int | None  # None: the stored media could not be measured
    sha256: str = ""  # HLS: of the playlist now stored


def measure(destination: Destination, file_id: str, output_format: str, *, full_segment_urls: bool,
            budget_bytes: int) -> Stored | None:
    """The file as stored, None when nothing of it is. Raises StorageError (a bucket
    that does not answer; an HLS file with more segments than `budget_bytes` lets
    open). Media too long to read within the budget, or not understood, has no
    Duration."""
    adapter = destination.upload_adapter()
    budget = ReadBudget(budget_bytes)
    with destination.guarded():
        if output_format == "hls":
            return _measure_hls(destination, file_id, budget, full_segment_urls)
        stored = StoredObject.open(adapter, file_id, budget)
        if stored is None:
            return None
        span = _parsed(media_span.fmp4_span if output_format == "mp4" else media_span.demuxed_span, stored)
        return Stored(stored.size, None if span is None else round(span.duration_s * 1000))


def _parsed[T](parse: Callable[[StoredObject], T | None], stored: StoredObject) -> T | None:
    """What `parse` reads from a stored object; None when it would read past the budget
    or finds what our muxers do not write."""
    try:
        return parse(stored)
    except ReadBudgetExceeded:
        log.warning("media_too_long_to_read_back", key=stored.key)
    except (struct.error, IndexError, ValueError) as error:
        log.warning("media_not_understood", key=stored.key, error=str(error))
    return None


def _measure_hls(destination: Destination, playlist_key: str, budget: ReadBudget,
                 full_segment_urls: bool) -> Stored | None:
    adapter = destination.upload_adapter()
    stem = playlist_key.removesuffix(PLAYLIST_EXTENSION)
    segments: list[StoredObject] = []
    while (segment := StoredObject.open(adapter, f"{stem}_{len(segments)}{SEGMENT_EXTENSION}", budget)) is not None:
        segments.append(segment)
    stored = StoredObject.open(adapter, playlist_key, budget)
    old = stored.read(0, stored.size) if stored is not None else b""
    listed, durations = _timeline(segments)
    if not listed:
        return None if stored is None else Stored(stored.size, None, hashlib.sha256(old).hexdigest())
    prefix = _segment_prefix(old.decode(errors="replace"), listed[0].key.rsplit("/", 1)[-1])
    if prefix is None:  # no playlist to follow: as the task asked (a name's URL with a one-letter name, less it)
        folder = playlist_key.rpartition("/")[0]
        prefix = destination.public_url(f"{folder}/x" if folder else "x")[:-1] if full_segment_urls else ""
    playlist = vod_playlist([(prefix + s.key.rsplit("/", 1)[-1], d) for s, d in zip(listed, durations)])
    if playlist != old:
        sink = adapter.open_object(playlist_key)
        sink.write(playlist)
        sink.close()
        log.info("playlist_rebuilt", file_id=playlist_key, segments=len(listed), was_listed=len(_EXTINF.findall(
            old.decode(errors="replace"))))
    size = len(playlist) + sum(s.size for s in listed)
    return Stored(size, round(sum(durations) * 1000), hashlib.sha256(playlist).hexdigest())


def _timeline(segments: list[StoredObject]) -> tuple[list[StoredObject], list[float]]:
    """The segments that hold media, each lasting until the next one starts (the
    last one: until its last frame ends)."""
    starts = [(s, _parsed(media_span.ts_start_s, s)) for s in segments]
    timed = [(s, start) for s, start in starts if start is not None]
    if len(timed) < len(segments):
        log.warning("segments_without_media", keys=[s.key for s, start in starts if start is None])
    if not timed:
        return [], []
    last = _parsed(media_span.ts_span, timed[-1][0])
    ends = [start for _, start in timed[1:]] + [last.end_s if last is not None else timed[-1][1]]
    return [s for s, _ in timed], [max(0.0, end - start) for (_, start), end in zip(timed, ends)]


def _segment_prefix(playlist: str, first_segment: str) -> str | None:
    """How the stored playlist names segments (bare, or after a URL prefix); None without one."""
    for line in playlist.splitlines():
        if line.endswith(first_segment) and not line.startswith("#"):
            return line[:-len(first_segment)]
    return None


def vod_playlist(segments: list[tuple[str, float]]) -> bytes:
    """A finished playlist as FFmpeg writes one: every segment with its duration."""
    target = max(1, max(math.floor(d + 0.5) for _, d in segments))  # EXTINF rounded must not exceed it
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{target}", "#EXT-X-MEDIA-SEQUENCE:0",
             "#EXT-X-PLAYLIST-TYPE:VOD"]
    for uri, duration in segments:
        lines += [f"#EXTINF:{duration:.6f},", uri]
    lines.append("#EXT-X-ENDLIST")
    return ("\n".join(lines) + "\n").encode()
