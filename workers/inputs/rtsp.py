"""RTSP input: the worker subscribes to a camera (or any RTSP server) with FFmpeg's RTSP
client, through PyAV. FFmpeg does the session (DESCRIBE, SETUP over TCP interleaved or
UDP, PLAY, keep-alive, TEARDOWN) and depayloads; nothing is decoded except audio that
no container we write can hold as it is.

Tracks (the first of each kind the source offers; the rest are ignored and named in the
reply): video H.264 or H.265, as sent (Annex B; parameter sets from the SDP put in front of
key frames that lack them); audio AAC-LC and Opus as sent, G.711 (mu-law, A-law) and
AAC other than LC decoded and encoded again as AAC-LC (`AudioToAac`). A source with
nothing recordable is refused, naming what it offers.

Timing: FFmpeg gives each track a timeline of its own until the camera's first RTCP
Sender Report for it, then moves it onto the camera's clock (libavformat/rtpdec.c,
`finalize_packet`), so once reports have come, the tracks' timestamps are camera time,
aligned. We hand them on as they are with a Sender Report of our own per track that maps
timestamp 0 of every track to one instant: the recording then lines the tracks up as
FFmpeg did. Where FFmpeg's move makes the video go back in time, the video timestamps
are shifted to go on where they were (and that track's report with them): a file never
loses a video frame to it. Forward moves, and audio, stay as FFmpeg says.

The blocking reads run on a thread of their own; frames wait in a queue the worker's
tick empties. A source that sends nothing for `stall_timeout_s` (a camera that hangs
without closing) is ended like one that closed (`on_closed`).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import threading
import time
from dataclasses import dataclass, field

import av
import structlog

from contract.codes import MediaKind
from contract.worker import PullSpec, TrackSpec
from workers.codecs import aac, h265, video_codec
from workers.codecs.base import VideoCodec
from workers.codecs.h264 import split_annexb, to_annexb
from workers.frames import EncodedFrame
from workers.inputs.base import FrameHandler, SenderReportHandler, StreamInput

log = structlog.get_logger("rtsp")

VIDEO_CODECS = {"h264": "H264", "hevc": "H265"}  # FFmpeg's name -> ours (TrackSpec.codec)
PASSTHROUGH_AUDIO = ("aac", "opus")
TRANSCODED_AUDIO = ("pcm_mulaw", "pcm_alaw")
ANCHOR_NTP = 0x83AA7E80 << 32  # 1970-01-01 in NTP: the instant every track's timestamp 0 is reported at
PROBE_OPTIONS = {"analyzeduration": "1000000", "probesize": "1000000"}
CLOSE_GRACE_S = 1.0  # aclose waits this long for the reader to send TEARDOWN
DEFAULT_FRAME_TICKS = 3000  # one frame at 30 fps (1/90000 s): the step put where FFmpeg gives none


class SourceError(Exception):
    """The source cannot be recorded; the message is safe to show (it never holds the URL)."""


def _reason(error: av.FFmpegError, what: str, timeout_s: float) -> str:
    """FFmpeg's errors name the URL (with any credentials in it): keep only the reason."""
    if isinstance(error, av.ExitError):
        return f"{what}: no answer within {timeout_s:g} s"
    return f"{what}: {error.strerror or type(error).__name__}"


@dataclass
class _TrackStats:
    packets: int = 0
    bytes: int = 0
    frames: int = 0
    no_timestamp: int = 0
    timestamp_jumps: int = 0


@dataclass
class _Track:
    """One recorded track of the source: how its packets become EncodedFrames."""

    spec: TrackSpec
    index: int  # the container's stream index
    scale: tuple[int, int]  # pts * scale[0] // scale[1] = timestamp in spec.clock_rate
    codec: VideoCodec | None = None  # video
    transcoder: aac.AudioToAac | None = None  # audio we cannot keep as it is
    shift: int = 0  # added to video timestamps so they never go back
    last: int | None = None  # the last timestamp handed on
    pending: tuple[bytes, float] | None = None  # a first video packet without a timestamp, and its arrival
    reported: bool = False  # a Sender Report went out for the current shift
    stats: _TrackStats = field(default_factory=_TrackStats)


def _video_track(stream, index: int) -> _Track:
    codec_name = VIDEO_CODECS[stream.codec_context.name]
    extradata = bytes(stream.codec_context.extradata or b"")
    sets = split_annexb(extradata) if extradata.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01")) else []
    spec = TrackSpec(MediaKind.VIDEO, codec_name, 0, 90000, 1, _sprop(codec_name, sets))
    return _Track(spec, index, _scale(stream.time_base, 90000), codec=video_codec(codec_name)(spec))


def _sprop(codec_name: str, sets: list[bytes]) -> tuple[tuple[str, str], ...]:
    """The parameter sets FFmpeg took from the SDP (Annex B extradata), as the SDP had them:
    the codec seeds its key-frame preparation with them."""
    def b64(nal: bytes) -> str:
        return base64.b64encode(nal).decode()

    if not sets:
        return ()
    if codec_name == "H264":
        return (("sprop-parameter-sets", ",".join(b64(n) for n in sets)),)
    return tuple((key, ",".join(b64(n) for n in sets if len(n) >= 2 and h265.nal_type(n) == kind))
                 for key, kind in zip(h265.SPROP_KEYS, h265.PARAMETER_SET_TYPES))


def _audio_track(stream, index: int) -> _Track:
    context = stream.codec_context
    rate, channels = context.sample_rate, context.channels
    if context.name == "opus":
        spec = TrackSpec(MediaKind.AUDIO, "opus", 0, 48000, channels or 2)
        return _Track(spec, index, _scale(stream.time_base, 48000))
    config = bytes(context.extradata or b"")
    if context.name == "aac" and aac.is_lc(config):
        spec = TrackSpec(MediaKind.AUDIO, "aac", 0, rate, channels, (("config", config.hex()),))
        return _Track(spec, index, _scale(stream.time_base, rate))
    transcoder = aac.AudioToAac(context.name, rate, channels, config)
    spec = TrackSpec(MediaKind.AUDIO, "aac", 0, transcoder.sample_rate, transcoder.channels,
                     (("config", transcoder.config.hex()),))
    return _Track(spec, index, _scale(stream.time_base, transcoder.sample_rate), transcoder=transcoder)


def _scale(time_base, clock_rate: int) -> tuple[int, int]:
    return time_base.numerator * clock_rate, time_base.denominator


def _describe(stream) -> str:
    return f"{stream.type} {stream.codec_context.name if stream.codec_context else 'unknown'}"


def choose_tracks(streams) -> tuple[list[_Track], list[str]]:
    """The tracks to record (the first usable of each kind) and what else the source offers."""
    tracks: list[_Track] = []
    ignored: list[str] = []
    for index, stream in enumerate(streams):
        context = stream.codec_context
        name = context.name if context is not None else ""
        kinds = {t.spec.kind for t in tracks}
        if stream.type == "video" and name in VIDEO_CODECS and MediaKind.VIDEO not in kinds:
            tracks.append(_video_track(stream, index))
        elif (stream.type == "audio" and name in PASSTHROUGH_AUDIO + TRANSCODED_AUDIO
              and MediaKind.AUDIO not in kinds and context.sample_rate):
            tracks.append(_audio_track(stream, index))
        else:
            ignored.append(_describe(stream))
    if not tracks:
        offered = ", ".join(ignored) or "no media"
        raise SourceError(f"nothing recordable: the source offers {offered}; recorded are H.264 and H.265 "
                          f"video, AAC, Opus and G.711 audio")
    return tracks, ignored


class RtspInput(StreamInput):
    def __init__(self, source: PullSpec, on_frame: FrameHandler, on_sender_report: SenderReportHandler,
                 on_closed):
        super().__init__(on_frame, on_sender_report)
        self._source = source
        self._on_closed = on_closed
        self._tracks: list[_Track] = []
        self._inbox: collections.deque = collections.deque()  # EncodedFrames and reports, from the reader
        self._reader: threading.Thread | None = None
        self._closing = threading.Event()
        self._ended: str | None = None  # why the reader stopped
        self._ended_reported = False
        self._last_packet: float | None = None

    async def start(self) -> None:
        """Nothing connects before `open()`."""

    async def open(self) -> tuple[tuple[TrackSpec, ...], tuple[str, ...]]:
        """Connect and start receiving: (the recorded tracks, what else the source offers).
        SourceError when the source cannot be reached or offers nothing recordable."""
        container = await asyncio.to_thread(self._connect)
        try:
            self._tracks, ignored = choose_tracks(container.streams)
        except (SourceError, av.FFmpegError, ValueError) as error:
            await asyncio.to_thread(container.close)
            raise SourceError(str(error)) if not isinstance(error, SourceError) else error from None
        self._reader = threading.Thread(target=self._read, args=(container,), name="rtsp-reader", daemon=True)
        self._reader.start()
        return tuple(t.spec for t in self._tracks), tuple(ignored)

    def _connect(self) -> av.container.InputContainer:
        options = {"rtsp_transport": self._source.transport, **PROBE_OPTIONS}
        try:
            return av.open(self._source.url, options=options,
                           timeout=(self._source.open_timeout_s, self._source.stall_timeout_s))
        except av.FFmpegError as error:
            raise SourceError(_reason(error, "cannot connect", self._source.open_timeout_s)) from None

    # the reader thread
    def _read(self, container: av.container.InputContainer) -> None:
        by_index = {t.index: t for t in self._tracks}
        reason = "the source ended the stream"
        try:
            for packet in container.demux([container.streams[t.index] for t in self._tracks]):
                if self._closing.is_set():
                    return
                if packet.size == 0:
                    continue
                self._last_packet = arrival = time.monotonic()
                self._take(by_index[packet.stream.index], packet, arrival)
        except av.FFmpegError as error:
            reason = _reason(error, "the source stopped", self._source.stall_timeout_s)
            if isinstance(error, av.ExitError):
                reason = f"no packet for {self._source.stall_timeout_s:g} s: the source stalled"
        except Exception as error:  # never let the thread die silently
            log.exception("rtsp_reader_failed")
            reason = f"the source's data could not be read: {type(error).__name__}"
        finally:
            self._ended = reason
            try:
                container.close()
            except av.FFmpegError:
                pass

    def _take(self, track: _Track, packet: av.Packet, arrival: float) -> None:
        stats = track.stats
        stats.packets += 1
        stats.bytes += packet.size
        pts = packet.pts if packet.pts is not None else packet.dts
        data = bytes(packet)
        if track.transcoder is not None:
            if pts is not None:
                for frame_data, timestamp in track.transcoder.transcode(data, pts, packet.time_base):
                    self._put(track, EncodedFrame(MediaKind.AUDIO, frame_data, timestamp, arrival), timestamp)
            else:
                stats.no_timestamp += 1
        elif track.codec is None:
            if pts is not None:
                timestamp = pts * track.scale[0] // track.scale[1]
                self._put(track, EncodedFrame(MediaKind.AUDIO, data, timestamp, arrival), timestamp)
            else:
                stats.no_timestamp += 1
        else:
            self._take_video(track, data, pts, arrival)

    def _take_video(self, track: _Track, data: bytes, pts: int | None, arrival: float) -> None:
        if pts is None:
            # FFmpeg's first video packet often has no timestamp (it may be the key frame
            # the recording starts on): it is placed one frame before the next one.
            track.stats.no_timestamp += 1
            if track.last is None:
                track.pending = (data, arrival)
            return
        media = pts * track.scale[0] // track.scale[1]
        timestamp = media + track.shift
        if track.pending is not None:
            self._put_video(track, *track.pending, timestamp - DEFAULT_FRAME_TICKS, media - DEFAULT_FRAME_TICKS)
            track.pending = None
        if track.last is not None and timestamp <= track.last:
            # FFmpeg moved the track onto the camera's clock, backwards: go on from here.
            track.shift += track.last + DEFAULT_FRAME_TICKS - timestamp
            timestamp = media + track.shift
            track.stats.timestamp_jumps += 1
            track.reported = False
        self._put_video(track, data, arrival, timestamp, media)

    def _put_video(self, track: _Track, data: bytes, arrival: float, timestamp: int, media: int) -> None:
        assert track.codec is not None
        frame = to_annexb(split_annexb(data))  # 4-byte start codes, as every input gives
        if not frame:
            return
        keyframe = track.codec.is_keyframe(frame)
        if keyframe:
            frame = track.codec.prepare_keyframe(frame)
        self._put(track, EncodedFrame(MediaKind.VIDEO, frame, timestamp, arrival, keyframe), media)

    def _put(self, track: _Track, frame: EncodedFrame, media: int) -> None:
        """Queue the frame, then (first frame, or the video's shift changed) a Sender Report
        pairing its timestamp with its time on FFmpeg's timeline (`media`, in clock ticks)."""
        track.last = frame.rtp_timestamp
        track.stats.frames += 1
        self._inbox.append(frame)
        if not track.reported:
            track.reported = True
            ntp = ANCHOR_NTP + (media << 32) // track.spec.clock_rate
            self._inbox.append((track.spec.kind, ntp, frame.rtp_timestamp & 0xFFFFFFFF))

    # StreamInput, on the worker's loop
    def tick(self, now: float) -> None:
        inbox = self._inbox
        while inbox:
            item = inbox.popleft()
            if isinstance(item, EncodedFrame):
                self.on_frame(item)
            else:
                self.on_sender_report(*item)
        if self._ended is not None and not self._ended_reported and not self._closing.is_set():
            self._ended_reported = True
            log.info("rtsp_source_ended", reason=self._ended)
            self._on_closed(self._ended)

    def request_keyframe(self) -> None:
        """RTSP has no way to ask for one: the GOP cache and the camera's own interval serve."""

    def stats(self) -> dict[str, dict[str, float]]:
        return {t.spec.kind.value: {**vars(t.stats), "timestamp_shift": t.shift} for t in self._tracks}

    @property
    def last_packet(self) -> float | None:
        return self._last_packet

    def close(self) -> None:
        """The reader stops at its next packet (or read timeout) and sends TEARDOWN."""
        self._closing.set()

    async def aclose(self) -> None:
        self.close()
        if self._reader is not None and self._reader.is_alive():
            await asyncio.to_thread(self._reader.join, CLOSE_GRACE_S)
