"""H.264 bitstream facts a recorder needs to remux without decoding.

Covers: Annex-B / AVCC framing, NAL unit types, RTP depayloading (RFC 6184,
packetization-mode 1: single NAL unit, STAP-A, FU-A), and keeping SPS/PPS in front
of every IDR access unit so each file or segment starts decodable. SPS parsing and
SDP `sprop-parameter-sets` are in `h264_sps`.

Why not aiortc's depayloader (`H264PayloadDescriptor.parse`): it handles each packet
alone, so an FU-A fragment whose start fragment was lost comes out as raw bytes
without a start code, glued to the end of the previous NAL unit, and an FU-A NAL
whose end fragment was lost is emitted truncated. It also rejects 1-byte single NAL
packets (end of sequence / end of stream). Depayloading a whole frame at once lets
us drop exactly the broken NAL units instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from workers.codecs.base import VideoCodec
from workers.codecs.h264_sps import NAL_SPS, SpsInfo, parse_sprop_parameter_sets, parse_sps

if TYPE_CHECKING:
    from contract.worker import TrackSpec

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_PPS = 8
NAL_AUD = 9
NAL_STAP_A = 24
NAL_FU_A = 28

START_CODE = b"\x00\x00\x00\x01"
_SHORT_START_CODE = b"\x00\x00\x01"

_NAL_TYPE_MASK = 0x1F
_FU_START = 0x80
_FU_END = 0x40
_STAP_LENGTH_SIZE = 2

# NAL unit types that may open an access unit (H.264 7.4.1.2.3); slices (1, 5) open one
# only when they carry the first macroblock.
_AU_OPENING_TYPES = frozenset({NAL_SEI, NAL_SPS, NAL_PPS, NAL_AUD, 13, 14, 15})
_SLICE_TYPES = frozenset({NAL_SLICE, NAL_IDR})



# -- framing -------------------------------------------------------------------


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex-B byte stream (3- or 4-byte start codes), without start codes.

    Bytes before the first start code are ignored. Trailing zero bytes of each unit are
    stripped: they are the leading zero of a 4-byte start code or trailing_zero_8bits,
    never part of a NAL unit (whose last byte is never 0x00).
    """
    nals: list[bytes] = []
    pos = data.find(_SHORT_START_CODE)
    while pos != -1:
        begin = pos + len(_SHORT_START_CODE)
        pos = data.find(_SHORT_START_CODE, begin)
        nal = data[begin : len(data) if pos == -1 else pos].rstrip(b"\x00")
        if nal:
            nals.append(nal)
    return nals


def to_annexb(nals: Iterable[bytes]) -> bytes:
    """Join NAL units with 4-byte start codes (the form `EncodedFrame.data` uses)."""
    return b"".join(START_CODE + nal for nal in nals)


def split_avcc(data: bytes, length_size: int = 4) -> list[bytes]:
    """NAL units of length-prefixed (MP4 / avcC) data."""
    if length_size not in (1, 2, 3, 4):
        raise ValueError(f"invalid NAL length size {length_size}")
    nals: list[bytes] = []
    pos = 0
    while pos < len(data):
        if pos + length_size > len(data):
            raise ValueError("truncated NAL length field")
        size = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if pos + size > len(data):
            raise ValueError("truncated NAL unit")
        nals.append(data[pos : pos + size])
        pos += size
    return nals


def to_avcc(nals: Iterable[bytes], length_size: int = 4) -> bytes:
    """Join NAL units with big-endian length prefixes."""
    return b"".join(len(nal).to_bytes(length_size, "big") + nal for nal in nals)


def nal_type(nal: bytes) -> int:
    if not nal:
        raise ValueError("empty NAL unit")
    return nal[0] & _NAL_TYPE_MASK


def is_keyframe(annexb: bytes) -> bool:
    """Whether the access unit contains an IDR slice (decoding can start here)."""
    return any(nal_type(nal) == NAL_IDR for nal in split_annexb(annexb))


# -- RTP (RFC 6184) --------------------------------------------------------------


def depayload_nals(payloads: Iterable[bytes]) -> tuple[list[bytes], int]:
    """NAL units carried by the RTP payloads of one frame, and how many were broken.

    Single NAL unit packets and STAP-A units pass through. FU-A fragments are joined
    from the start fragment (S bit) to the end fragment (E bit). A NAL unit is dropped,
    and counted as broken, when its start fragment is missing (fragments with no open
    NAL unit, or of another type), when its end fragment is missing (another packet or
    the end of the frame comes first), or when the packet is malformed or of a type
    packetization-mode 1 does not use (STAP-B, MTAP, FU-B). A lost *middle* fragment
    cannot be seen here; the jitter buffer never emits a frame with a hole inside.
    Empty payloads (padding) are skipped.
    """
    nals: list[bytes] = []
    broken = 0
    fragments: list[bytes] | None = None  # the FU-A NAL unit being joined
    orphan: bytes | None = None  # header of a headless FU-A NAL unit being skipped

    for payload in payloads:
        if not payload:
            continue
        kind = payload[0] & _NAL_TYPE_MASK
        if kind == NAL_FU_A:
            if len(payload) < 2:
                broken += 1
                continue
            fu_header = payload[1]
            original = bytes([(payload[0] & 0xE0) | (fu_header & _NAL_TYPE_MASK)])
            if fu_header & _FU_START:
                orphan = None
                if fragments is not None:
                    broken += 1  # the previous one never ended
                fragments = [original, payload[2:]]
            elif fragments is None or fragments[0] != original:
                if fragments is not None:
                    broken += 1  # the open one never ended
                    fragments = None
                if orphan != original:
                    broken += 1  # count each headless NAL unit once
                orphan = None if fu_header & _FU_END else original
                continue
            else:
                fragments.append(payload[2:])
            if fu_header & _FU_END:
                nals.append(b"".join(fragments))
                fragments = None
            continue

        orphan = None
        if fragments is not None:
            broken += 1  # an FU-A NAL unit lost its end fragment
            fragments = None
        if 1 <= kind <= 23:
            nals.append(payload)
        elif kind == NAL_STAP_A:
            units, ok = _split_stap_a(payload)
            nals.extend(units)
            broken += 0 if ok else 1
        else:
            broken += 1

    if fragments is not None:
        broken += 1
    return nals, broken


def _split_stap_a(payload: bytes) -> tuple[list[bytes], bool]:
    units: list[bytes] = []
    pos = 1
    while pos < len(payload):
        if pos + _STAP_LENGTH_SIZE > len(payload):
            return units, False
        size = int.from_bytes(payload[pos : pos + _STAP_LENGTH_SIZE], "big")
        pos += _STAP_LENGTH_SIZE
        if pos + size > len(payload):
            return units, False
        if size:
            units.append(payload[pos : pos + size])
        pos += size
    return units, True


def depayload_frame(payloads: Iterable[bytes]) -> bytes:
    """RTP payloads of one frame, in order, to one Annex-B access unit (4-byte start codes).

    Broken NAL units are left out (see `depayload_nals`), never emitted as garbage.
    """
    nals, _ = depayload_nals(payloads)
    return to_annexb(nals)


def payload_starts_frame(payload: bytes) -> bool:
    """Whether an RTP payload begins an access unit; the jitter buffer's `starts_frame`.

    True for a NAL unit that may open an access unit (AUD, SEI, SPS, PPS, ...) or a slice
    whose first_mb_in_slice is 0 (its first Exp-Golomb bit is 1), carried alone, first
    in a STAP-A, or in an FU-A start fragment. Streams using arbitrary slice order
    (never seen from WebRTC encoders) would have frames wrongly judged partial.
    """
    if not payload:
        return False
    kind = payload[0] & _NAL_TYPE_MASK
    if kind == NAL_STAP_A:
        first = payload[1 + _STAP_LENGTH_SIZE :]
        return len(first) >= 1 and _nal_opens_access_unit(first[0], first[1:2])
    if kind == NAL_FU_A:
        if len(payload) < 2 or not payload[1] & _FU_START:
            return False
        return _nal_opens_access_unit(payload[1], payload[2:3])
    return _nal_opens_access_unit(payload[0], payload[1:2])


def _nal_opens_access_unit(header: int, first_byte: bytes) -> bool:
    kind = header & _NAL_TYPE_MASK
    if kind in _AU_OPENING_TYPES:
        return True
    if kind in _SLICE_TYPES:
        return bool(first_byte) and bool(first_byte[0] & 0x80)
    return False


# -- parameter sets across a stream ---------------------------------------------------


class ParameterSets:
    """Remembers the stream's latest SPS and PPS so every IDR can carry them.

    A file or segment must start with an IDR that has SPS and PPS in front (PyAV takes
    the extradata from the first packet), but WebRTC senders may send them only once,
    or in the SDP. Only the latest SPS and the latest PPS are kept: WebRTC encoders use
    one of each (id 0); a stream switching between several ids is not handled.
    """

    def __init__(self, initial: Iterable[bytes] = ()) -> None:
        """`initial`: NAL units to seed with, e.g. `parse_sprop_parameter_sets(fmtp)`."""
        self._sps: bytes | None = None
        self._pps: bytes | None = None
        self._info: SpsInfo | None = None
        for nal in initial:
            self._observe_nal(nal)

    @property
    def sps(self) -> bytes | None:
        return self._sps

    @property
    def pps(self) -> bytes | None:
        return self._pps

    @property
    def sps_info(self) -> SpsInfo | None:
        """The parsed latest SPS, or None (none seen, or it did not parse)."""
        return self._info

    @property
    def resolution(self) -> tuple[int, int] | None:
        """(width, height) from the latest SPS, or None."""
        return None if self._info is None else (self._info.width, self._info.height)

    def observe(self, annexb: bytes) -> None:
        """Remember the SPS and PPS carried by an access unit, if any."""
        for nal in split_annexb(annexb):
            self._observe_nal(nal)

    def observe_nal(self, nal: bytes) -> None:
        """Remember this NAL unit if it is an SPS or a PPS."""
        self._observe_nal(nal)

    def _observe_nal(self, nal: bytes) -> None:
        kind = nal_type(nal)
        if kind == NAL_SPS and nal != self._sps:
            self._sps = nal
            try:
                self._info = parse_sps(nal)
            except ValueError:
                self._info = None
        elif kind == NAL_PPS:
            self._pps = nal

    def ensure_on_keyframe(self, annexb: bytes) -> bytes:
        """The access unit with the remembered SPS and PPS in front if it is an IDR lacking them.

        Observes the access unit first, so its own parameter sets win. Returned
        unchanged (the same object) when it is not an IDR, already carries both, or
        nothing suitable is remembered. When something is added, the result is
        [AUD] SPS... PPS... rest, with 4-byte start codes.
        """
        nals = split_annexb(annexb)
        for nal in nals:
            self._observe_nal(nal)
        kinds = [nal_type(nal) for nal in nals]
        if NAL_IDR not in kinds:
            return annexb
        own_sps = [nal for nal, kind in zip(nals, kinds) if kind == NAL_SPS]
        own_pps = [nal for nal, kind in zip(nals, kinds) if kind == NAL_PPS]
        add_sps = not own_sps and self._sps is not None
        add_pps = not own_pps and self._pps is not None
        if not (add_sps or add_pps):
            return annexb
        head = nals[:1] if kinds[0] == NAL_AUD else []
        sps = own_sps if own_sps else [self._sps] if self._sps is not None else []
        pps = own_pps if own_pps else [self._pps] if self._pps is not None else []
        rest = [
            nal
            for nal, kind in zip(nals[len(head) :], kinds[len(head) :])
            if kind not in (NAL_SPS, NAL_PPS)
        ]
        return to_annexb([*head, *sps, *pps, *rest])


# -- as a VideoCodec ------------------------------------------------------------------


class H264Codec(VideoCodec):
    """H.264 (RFC 6184, packetization-mode 1): Annex-B access units, SPS/PPS on every IDR."""

    name = "H264"
    container_codec = "h264"

    payload_starts_frame = staticmethod(payload_starts_frame)
    is_keyframe = staticmethod(is_keyframe)

    def __init__(self, spec: TrackSpec) -> None:
        super().__init__(spec)
        sprop = spec.fmtp_value("sprop-parameter-sets")
        self.parameter_sets = ParameterSets(parse_sprop_parameter_sets(sprop) if sprop else ())

    def depayload(self, payloads: Iterable[bytes]) -> bytes:
        return self.depayload_frame(payloads)[0]

    def depayload_frame(self, payloads: Iterable[bytes]) -> tuple[bytes, bool]:
        """From the NAL units as depayloaded, without scanning the access unit for start
        codes again (that scan cost more than the depayloading)."""
        nals, _ = depayload_nals(payloads)
        keyframe = False
        for nal in nals:
            kind = nal[0] & _NAL_TYPE_MASK
            if kind == NAL_IDR:
                keyframe = True
            elif kind == NAL_SPS or kind == NAL_PPS:
                # stripped as split_annexb gives it; also from frames the loss gate drops
                self.parameter_sets.observe_nal(nal.rstrip(b"\x00"))
        return to_annexb(nals), keyframe

    def prepare_keyframe(self, frame: bytes) -> bytes:
        return self.parameter_sets.ensure_on_keyframe(frame)

    @staticmethod
    def keyframe_size(frame: bytes) -> tuple[int, int]:
        sps = next((nal for nal in split_annexb(frame) if nal_type(nal) == NAL_SPS), None)
        if sps is None:
            raise ValueError("the H.264 key frame carries no SPS and the SDP gave none")
        info = parse_sps(sps)
        return info.width, info.height
