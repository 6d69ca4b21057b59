"""Tests for workers.codecs.h264 against real libx264 output (PyAV) and aiortc's packetizer."""

from __future__ import annotations

import base64
import functools
from fractions import Fraction

import av
import numpy as np
import pytest
from aiortc.codecs.h264 import H264Encoder, H264PayloadDescriptor

from contract.codes import MediaKind
from contract.worker import TrackSpec
from workers.codecs import video_codec
from workers.codecs.h264 import (
    NAL_AUD,
    NAL_FU_A,
    NAL_IDR,
    NAL_PPS,
    NAL_SEI,
    NAL_SLICE,
    NAL_SPS,
    NAL_STAP_A,
    H264Codec,
    ParameterSets,
    SpsInfo,
    depayload_frame,
    depayload_nals,
    is_keyframe,
    nal_type,
    parse_sprop_parameter_sets,
    parse_sps,
    payload_starts_frame,
    split_annexb,
    split_avcc,
    to_annexb,
    to_avcc,
)

BASE_PARAMS = "repeat-headers=1:keyint=10:scenecut=0"


@functools.cache
def encode(
    width: int,
    height: int,
    profile: str = "baseline",
    pix_fmt: str = "yuv420p",
    extra: str = "",
    frames: int = 1,
    noise: bool = False,
) -> tuple[bytes, ...]:
    """Access units (Annex-B) from libx264 with WebRTC-like settings."""
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, pix_fmt
    codec.time_base = Fraction(1, 30)
    codec.framerate = Fraction(30, 1)
    codec.options = {
        "profile": profile,
        "tune": "zerolatency",
        "preset": "veryfast",
        "x264-params": BASE_PARAMS + extra,
    }
    rng = np.random.default_rng(7)
    out: list[bytes] = []
    for index in range(frames):
        frame = av.VideoFrame(width, height, pix_fmt)
        for plane in frame.planes:
            size = plane.buffer_size
            data = rng.integers(0, 256, size, dtype=np.uint8) if noise else np.full(size, 128, np.uint8)
            plane.update(data.tobytes())
        frame.pts = index
        out += [bytes(packet) for packet in codec.encode(frame)]
    out += [bytes(packet) for packet in codec.encode(None)]
    return tuple(out)


def decode(access_units: list[bytes]) -> list[av.VideoFrame]:
    decoder = av.CodecContext.create("h264", "r")
    frames: list[av.VideoFrame] = []
    for data in access_units:
        frames += decoder.decode(av.Packet(data))
    frames += decoder.decode(None)
    return frames


def first_sps(access_unit: bytes) -> bytes:
    return next(nal for nal in split_annexb(access_unit) if nal_type(nal) == NAL_SPS)


def rtp_payloads(access_unit: bytes, pts: int = 0) -> list[bytes]:
    """aiortc's own packetizer, as an aiortc publisher would send the access unit."""
    packet = av.Packet(access_unit)
    packet.pts = pts
    packet.time_base = Fraction(1, 30)
    payloads, _ = H264Encoder().pack(packet)
    return payloads


def canonical(access_unit: bytes) -> bytes:
    return to_annexb(split_annexb(access_unit))


# -- framing --------------------------------------------------------------------------


def test_split_annexb_mixed_start_codes_junk_and_trailing_zeros() -> None:
    data = b"junk" + b"\x00\x00\x00\x01\x67\x42" + b"\x00\x00\x01\x68\xce\x00\x00" + b"\x00\x00\x01\x65\x88\x84"
    assert split_annexb(data) == [b"\x67\x42", b"\x68\xce", b"\x65\x88\x84"]
    assert split_annexb(b"") == []
    assert split_annexb(b"\x00\x00\x01") == []
    assert to_annexb([b"\x67\x42", b"\x68"]) == b"\x00\x00\x00\x01\x67\x42\x00\x00\x00\x01\x68"


def test_real_access_unit_mixes_3_and_4_byte_start_codes() -> None:
    idr = encode(64, 64)[0]
    assert idr.startswith(b"\x00\x00\x00\x01") and b"\x00\x00\x01\x06" in idr  # SEI with 3
    nals = split_annexb(idr)
    assert [nal_type(nal) for nal in nals] == [NAL_SPS, NAL_PPS, NAL_SEI, NAL_IDR]
    assert split_annexb(to_annexb(nals)) == nals
    assert to_annexb(nals).count(b"\x00\x00\x00\x01") == 4


def test_avcc_round_trip_and_truncation() -> None:
    nals = split_annexb(encode(64, 64)[0])
    for size in (1, 2, 3, 4):
        if size == 1 and any(len(nal) > 255 for nal in nals):
            continue
        assert split_avcc(to_avcc(nals, size), size) == nals
    assert split_avcc(to_avcc(nals)) == nals
    with pytest.raises(ValueError):
        split_avcc(to_avcc(nals)[:-1])
    with pytest.raises(ValueError):
        split_avcc(b"\x00\x00", 4)
    with pytest.raises(ValueError):
        split_avcc(b"", 5)


def test_nal_type_and_keyframes() -> None:
    assert (NAL_SLICE, NAL_IDR, NAL_SEI, NAL_SPS, NAL_PPS, NAL_AUD) == (1, 5, 6, 7, 8, 9)
    assert nal_type(b"\x65") == NAL_IDR and nal_type(b"\x41") == NAL_SLICE
    with pytest.raises(ValueError):
        nal_type(b"")
    units = encode(64, 64, frames=12)
    assert [is_keyframe(unit) for unit in units] == [i % 10 == 0 for i in range(12)]


# -- SPS --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "profile", "pix_fmt", "extra", "profile_idc"),
    [
        (320, 240, "baseline", "yuv420p", "", 66),
        (176, 144, "baseline", "yuv420p", "", 66),
        (1920, 1080, "baseline", "yuv420p", "", 66),  # coded 1088, cropped
        (1280, 720, "main", "yuv420p", "", 77),
        (1920, 1080, "high", "yuv420p", "", 100),
        (1920, 1080, "high", "yuv420p", ":interlaced=1", 100),  # field coding + cropping
        (98, 60, "main", "yuv420p", ":interlaced=1", 77),  # crop in both directions
        (66, 50, "high422", "yuv422p", "", 122),  # 4:2:2 crop units
        (62, 46, "high444", "yuv444p", "", 244),  # 4:4:4 crop units
        (64, 64, "high10", "yuv420p10le", "", 110),
    ],
)
def test_parse_sps_from_libx264(
    width: int, height: int, profile: str, pix_fmt: str, extra: str, profile_idc: int
) -> None:
    sps = first_sps(encode(width, height, profile, pix_fmt, extra)[0])
    assert b"\x00\x00\x03" in sps  # libx264's SPS carry emulation prevention bytes
    info = parse_sps(sps)
    assert (info.width, info.height) == (width, height)
    assert info.profile_idc == profile_idc
    assert info.constraint_flags == sps[2] and info.level_idc == sps[3]
    assert info.codec_string == "avc1." + sps[1:4].hex()


def test_sps_constraint_flags_and_profile_level_id() -> None:
    info = parse_sps(first_sps(encode(320, 240)[0]))
    assert info == SpsInfo(profile_idc=66, constraint_flags=0xC0, level_idc=13, width=320, height=240)
    assert info.profile_level_id == "42c00d"


class BitWriter:
    """Test-side Exp-Golomb writer, to build SPS with fields libx264 never emits."""

    def __init__(self) -> None:
        self.bits: list[int] = []

    def u(self, bits: int, value: int) -> None:
        self.bits += [(value >> (bits - 1 - i)) & 1 for i in range(bits)]

    def ue(self, value: int) -> None:
        code = value + 1
        self.u(code.bit_length() - 1, 0)
        self.u(code.bit_length(), code)

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def rbsp(self) -> bytes:
        bits = self.bits + [1]
        bits += [0] * (-len(bits) % 8)
        return bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))


def escape(rbsp: bytes) -> bytes:
    out, zeros = bytearray(), 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def build_sps(
    *,
    profile_idc: int = 100,
    chroma_format_idc: int = 1,
    separate_colour_plane: bool = False,
    scaling: bool = False,
    poc_type: int = 2,
    max_refs: int = 1,
    width_mbs: int = 4,
    height_map_units: int = 4,
    frame_mbs_only: bool = True,
    crop: tuple[int, int, int, int] | None = None,
) -> bytes:
    """An SPS whose slice-relevant fields match libx264's 64x64 high-profile stream."""
    w = BitWriter()
    w.u(8, profile_idc)
    w.u(8, 0)
    w.u(8, 10)
    w.ue(0)  # sps id
    if profile_idc in (100, 110, 122, 244):
        w.ue(chroma_format_idc)
        if chroma_format_idc == 3:
            w.u(1, int(separate_colour_plane))
        w.ue(0)
        w.ue(0)
        w.u(1, 0)
        w.u(1, int(scaling))
        if scaling:
            for index in range(8 if chroma_format_idc != 3 else 12):
                size = 16 if index < 6 else 64
                if index == 0:  # explicit flat list
                    w.u(1, 1)
                    w.se(8)
                    for _ in range(size - 1):
                        w.se(0)
                elif index == 1:  # 16, then "repeat the last value" (next scale 0)
                    w.u(1, 1)
                    w.se(8)
                    w.se(-16)
                elif index == 6:  # explicit flat 8x8 list
                    w.u(1, 1)
                    w.se(8)
                    for _ in range(size - 1):
                        w.se(0)
                else:
                    w.u(1, 0)  # fall back to flat (no scaling matrix used by the stream)
    w.ue(0)  # log2_max_frame_num_minus4
    w.ue(poc_type)
    if poc_type == 0:
        w.ue(0)
    elif poc_type == 1:
        w.u(1, 1)  # delta_pic_order_always_zero_flag: no extra slice header bits
        w.se(-1)
        w.se(3)
        w.ue(2)
        w.se(2)
        w.se(-5)
    w.ue(max_refs)
    w.u(1, 0)
    w.ue(width_mbs - 1)
    w.ue(height_map_units - 1)
    w.u(1, int(frame_mbs_only))
    if not frame_mbs_only:
        w.u(1, 0)
    w.u(1, 1)  # direct_8x8_inference_flag
    w.u(1, crop is not None)
    for value in crop or ():
        w.ue(value)
    w.u(1, 0)  # no VUI
    return bytes([0x67]) + escape(w.rbsp())


@pytest.mark.parametrize(
    ("kwargs", "size"),
    [
        ({}, (64, 64)),
        ({"scaling": True}, (64, 64)),
        ({"poc_type": 1}, (64, 64)),
        ({"crop": (0, 2, 3, 4)}, (60, 50)),  # FFmpeg ignores unaligned left crops; keep 0
    ],
)
def test_handmade_sps_agrees_with_ffmpeg(kwargs: dict[str, object], size: tuple[int, int]) -> None:
    """Swap libx264's SPS for a handmade one; FFmpeg must decode the same pictures."""
    units = encode(64, 64, "high", frames=3, noise=True)
    sps = build_sps(**kwargs)  # type: ignore[arg-type]
    info = parse_sps(sps)
    assert (info.width, info.height) == size
    swapped = [
        to_annexb([sps if nal_type(nal) == NAL_SPS else nal for nal in split_annexb(unit)])
        for unit in units
    ]
    reference, frames = decode(list(units)), decode(swapped)
    assert frames and all((f.width, f.height) == size for f in frames)
    top = (kwargs.get("crop") or (0, 0, 0, 0))[2] * 2  # type: ignore[index]
    got = frames[0].to_ndarray()[: size[1], : size[0]]
    want = reference[0].to_ndarray()[top : top + size[1], : size[0]]
    assert np.array_equal(got, want)


def test_sps_with_emulation_prevention_before_the_size_fields() -> None:
    # Exp-Golomb codes of large values are long runs of zero bits: 00 00 0x bytes
    escaped = 0
    for shift in range(16):
        refs = (1 << (20 + shift % 5)) - 1  # 20+ zero bits, a one, 20+ zero bits
        sps = build_sps(profile_idc=66, max_refs=refs, width_mbs=(1 << 12) + shift, height_map_units=3)
        escaped += b"\x00\x00\x03" in sps
        info = parse_sps(sps)
        assert (info.width, info.height) == (((1 << 12) + shift) * 16, 48)
    assert escaped == 16


@pytest.mark.parametrize(
    ("chroma", "separate", "frame_mbs_only", "crop", "size"),
    [
        (0, False, True, (1, 1, 1, 1), (62, 62)),  # monochrome: crop units 1 x 1
        (3, True, True, (1, 2, 3, 4), (61, 57)),  # separate planes: ChromaArrayType 0
        (3, False, False, (1, 1, 1, 1), (62, 124)),  # 4:4:4 fields: units 1 x 2
        (1, False, False, (1, 1, 1, 1), (60, 120)),  # 4:2:0 fields: units 2 x 4
        (2, False, True, (1, 1, 1, 1), (60, 62)),  # 4:2:2: units 2 x 1
    ],
)
def test_sps_crop_units(
    chroma: int,
    separate: bool,
    frame_mbs_only: bool,
    crop: tuple[int, int, int, int],
    size: tuple[int, int],
) -> None:
    sps = build_sps(
        profile_idc=244,
        chroma_format_idc=chroma,
        separate_colour_plane=separate,
        frame_mbs_only=frame_mbs_only,
        crop=crop,
        scaling=chroma == 3,  # 12 scaling lists for 4:4:4
    )
    info = parse_sps(sps)
    assert (info.width, info.height) == size


def test_parse_sps_rejects_garbage() -> None:
    sps = first_sps(encode(320, 240)[0])
    with pytest.raises(ValueError):
        parse_sps(b"\x68" + sps[1:])  # a PPS header
    with pytest.raises(ValueError):
        parse_sps(sps[:6])  # truncated
    with pytest.raises(ValueError):
        parse_sps(b"\x67\x42\xc0\x1e" + b"\x00" * 8)  # endless Exp-Golomb prefix
    with pytest.raises(ValueError):
        parse_sps(b"")


def test_parse_sprop_parameter_sets() -> None:
    sps, pps = split_annexb(encode(320, 240)[0])[:2]
    value = base64.b64encode(sps).decode() + "," + base64.b64encode(pps).decode()
    assert parse_sprop_parameter_sets(value) == [sps, pps]
    unpadded = " " + base64.b64encode(sps).decode().rstrip("=") + " ,," + base64.b64encode(pps).decode()
    assert parse_sprop_parameter_sets(unpadded) == [sps, pps]
    assert parse_sprop_parameter_sets("") == []
    # a value seen in the wild (Chrome-style constrained baseline 640x480)
    nals = parse_sprop_parameter_sets("Z0LAHtkDxWhAAAADAEAAAA8jxgyyAA==,aMuMsg==")
    assert [nal_type(nal) for nal in nals] == [NAL_SPS, NAL_PPS]
    assert parse_sps(nals[0]).profile_level_id == "42c01e"
    with pytest.raises(ValueError):
        parse_sprop_parameter_sets("Z0L*AHtk")


# -- RTP depayloading -----------------------------------------------------------------------


@functools.cache
def packetized_stream() -> tuple[tuple[bytes, tuple[bytes, ...]], ...]:
    units = encode(64, 64, frames=12, noise=True)
    return tuple((unit, tuple(rtp_payloads(unit, pts))) for pts, unit in enumerate(units))


def test_depayload_round_trips_aiortc_packetizer_and_decodes() -> None:
    stream = packetized_stream()
    kinds = {payload[0] & 0x1F for _, payloads in stream for payload in payloads}
    assert {NAL_STAP_A, NAL_FU_A} <= kinds  # both aggregation and fragmentation exercised
    out = []
    for unit, payloads in stream:
        data = depayload_frame(payloads)
        assert data == canonical(unit)
        # aiortc's own per-packet depayloader agrees on intact frames
        assert data == b"".join(H264PayloadDescriptor.parse(p)[1] for p in payloads)
        assert depayload_nals(payloads)[1] == 0
        out.append(data)
    assert len(decode(out)) == len(stream)


def test_depayload_drops_a_nal_whose_start_fragment_is_missing() -> None:
    unit, payloads = packetized_stream()[0]
    fu_starts = [i for i, p in enumerate(payloads) if p[0] & 0x1F == NAL_FU_A and p[1] & 0x80]
    assert fu_starts
    damaged = [p for i, p in enumerate(payloads) if i != fu_starts[0]]
    nals, broken = depayload_nals(damaged)
    assert broken == 1
    originals = split_annexb(unit)
    assert [nal_type(nal) for nal in nals] == [NAL_SPS, NAL_PPS, NAL_SEI]
    assert all(nal in originals for nal in nals)  # no garbage, nothing glued on
    # aiortc's per-packet parser glues the headless fragments onto the previous NAL unit
    glued = split_annexb(b"".join(H264PayloadDescriptor.parse(p)[1] for p in damaged))
    assert glued[-1] not in originals and glued[-1].startswith(originals[2])


def test_depayload_drops_a_nal_whose_end_fragment_is_missing() -> None:
    unit, payloads = packetized_stream()[1]  # a P frame in FU-A fragments only
    assert all(p[0] & 0x1F == NAL_FU_A for p in payloads) and len(payloads) >= 3
    assert depayload_nals(payloads[:-1]) == ([], 1)  # end of frame comes first
    nals, broken = depayload_nals([*payloads[:-1], b"\x09\xf0"])  # another NAL comes first
    assert nals == [b"\x09\xf0"] and broken == 1
    nals, broken = depayload_nals([*payloads[:-1], *payloads])  # a new start comes first
    assert nals == split_annexb(unit) and broken == 1


def test_depayload_orphan_fragments_count_once_per_nal() -> None:
    _, payloads = packetized_stream()[1]
    middles = list(payloads[1:])  # start lost: middle(s) and end
    assert depayload_nals(middles) == ([], 1)
    assert depayload_nals(middles + middles) == ([], 2)


def test_depayload_odd_packets() -> None:
    sps = split_annexb(encode(64, 64)[0])[0]
    stap = bytes([NAL_STAP_A]) + len(sps).to_bytes(2, "big") + sps + b"\x00\x00"  # empty unit
    assert depayload_nals([b"", stap, b"\x0b"]) == ([sps, b"\x0b"], 0)  # 1-byte end-of-stream NAL
    with pytest.raises(ValueError):
        H264PayloadDescriptor.parse(b"\x0b")  # aiortc rejects it
    truncated = bytes([NAL_STAP_A]) + b"\x00\x05\x67\x42"
    assert depayload_nals([truncated]) == ([], 1)
    assert depayload_nals([b"\x19\x00\x01\x67", b"\x1c"]) == ([], 2)  # STAP-B, short FU-A
    single_fu = bytes([0x7C, 0x80 | 0x40 | NAL_IDR]) + b"\x88"  # start and end at once
    assert depayload_nals([single_fu]) == ([b"\x65\x88"], 0)
    assert depayload_frame([]) == b""


def test_payload_starts_frame_on_real_streams() -> None:
    for _, payloads in packetized_stream():
        assert payload_starts_frame(payloads[0])
        # fragments that do not start a NAL unit never start a frame; the IDR's own start
        # fragment after the SPS/PPS STAP-A could (if that STAP-A were lost)
        for payload in payloads[1:]:
            assert payload_starts_frame(payload) == bool(payload[1] & 0x80 and payload[1] & 0x1F == NAL_IDR)
    units = encode(64, 64, frames=2, extra=":slices=4", noise=True)
    for unit in units:
        slices = [n for n in split_annexb(unit) if nal_type(n) in (NAL_SLICE, NAL_IDR)]
        assert len(slices) == 4
        assert [payload_starts_frame(n) for n in slices] == [True, False, False, False]
        fragments = H264Encoder._packetize_fu_a(slices[1] + bytes(1400))
        assert not payload_starts_frame(fragments[0])


def test_payload_starts_frame_small_cases() -> None:
    assert payload_starts_frame(b"\x09\xf0")  # AUD
    assert payload_starts_frame(b"\x41\x9a")  # P slice, first_mb_in_slice 0
    assert not payload_starts_frame(b"\x41\x40")  # first_mb_in_slice 1
    assert not payload_starts_frame(b"\x41")
    assert not payload_starts_frame(b"")
    assert not payload_starts_frame(b"\x0c\xff")  # filler data
    assert payload_starts_frame(bytes([NAL_STAP_A, 0, 2, 0x67, 0x42]))
    assert not payload_starts_frame(bytes([NAL_FU_A | 0x60, 0x05, 0x88]))  # not a start fragment


# -- parameter sets -------------------------------------------------------------------------


def strip_parameter_sets(unit: bytes) -> bytes:
    return to_annexb([n for n in split_annexb(unit) if nal_type(n) not in (NAL_SPS, NAL_PPS)])


def test_parameter_sets_restore_a_bare_idr() -> None:
    units = encode(64, 64, frames=12, noise=True)
    sps, pps = split_annexb(units[0])[:2]
    tracker = ParameterSets()
    assert tracker.resolution is None and tracker.sps is None
    first = tracker.ensure_on_keyframe(units[0])
    assert first is units[0]  # already carries both: untouched
    assert tracker.resolution == (64, 64) and (tracker.sps, tracker.pps) == (sps, pps)

    bare = strip_parameter_sets(units[10])
    assert is_keyframe(bare)
    fixed = tracker.ensure_on_keyframe(bare)
    assert fixed == to_annexb([sps, pps, *split_annexb(bare)])
    # a file starting at this IDR decodes on its own
    assert len(decode([fixed, *units[11:]])) == 2
    with pytest.raises(av.error.InvalidDataError):
        decode([bare, *units[11:]])
    delta = units[3]
    assert tracker.ensure_on_keyframe(delta) is delta


def test_parameter_sets_seeded_from_sdp_and_partial_sets() -> None:
    units = encode(320, 240, frames=1)
    sps, pps, *rest = split_annexb(units[0])
    sprop = ",".join(base64.b64encode(nal).decode() for nal in (sps, pps))
    tracker = ParameterSets(parse_sprop_parameter_sets(sprop))
    assert tracker.resolution == (320, 240)
    assert tracker.sps_info is not None and tracker.sps_info.profile_idc == 66
    aud = b"\x09\xf0"
    # only the PPS missing, an AUD first: AUD, own SPS, remembered PPS, rest
    unit = to_annexb([aud, sps, *rest])
    assert tracker.ensure_on_keyframe(unit) == to_annexb([aud, sps, pps, *rest])
    # only the SPS missing: it goes before the unit's own PPS
    unit = to_annexb([pps, *rest])
    assert tracker.ensure_on_keyframe(unit) == to_annexb([sps, pps, *rest])


def test_parameter_sets_observe_tracks_the_latest_and_tolerates_junk() -> None:
    tracker = ParameterSets()
    bare = strip_parameter_sets(encode(64, 64)[0])
    assert tracker.ensure_on_keyframe(bare) is bare  # nothing to add
    tracker.observe(encode(320, 240)[0])
    assert tracker.resolution == (320, 240)
    tracker.observe(encode(176, 144)[0])
    assert tracker.resolution == (176, 144)
    tracker.observe(to_annexb([b"\x67\x42"]))  # an SPS that does not parse
    assert tracker.sps == b"\x67\x42" and tracker.resolution is None


def test_the_worker_s_h264_codec_turns_rtp_into_key_frames_a_file_can_start_on() -> None:
    """What a worker does with each H.264 frame (workers.codecs.video_codec("H264")): an
    aiortc-packetized IDR sent without SPS/PPS (they were only in the SDP) comes out of
    depayload + prepare_keyframe with them, decodes on its own, and gives the picture size."""
    units = encode(64, 64, frames=12, noise=True)
    sps, pps = split_annexb(units[0])[:2]
    sprop = ",".join(base64.b64encode(nal).decode() for nal in (sps, pps))
    spec = TrackSpec(MediaKind.VIDEO, "H264", 96, 90000, fmtp=(("packetization-mode", "1"),
                                                               ("sprop-parameter-sets", sprop)))
    codec = video_codec("h264")(spec)
    assert isinstance(codec, H264Codec) and codec.container_codec == "h264"
    bare = strip_parameter_sets(units[10])
    frame = codec.depayload(rtp_payloads(bare, 10))
    assert codec.is_keyframe(frame) and codec.payload_starts_frame(rtp_payloads(bare, 10)[0])
    keyframe = codec.prepare_keyframe(frame)
    assert keyframe == to_annexb([sps, pps, *split_annexb(bare)])
    assert codec.keyframe_size(keyframe) == (64, 64)
    assert len(decode([keyframe, units[11]])) == 2
    delta = codec.depayload(rtp_payloads(units[11], 11))
    assert not codec.is_keyframe(delta) and codec.prepare_keyframe(delta) == delta
    # the worker's path: depayload and key-frame flag in one pass (workers/tracks.py uses the flag)
    assert codec.depayload_frame(rtp_payloads(bare, 10)) == (frame, True)
    assert codec.depayload_frame(rtp_payloads(units[11], 11)) == (delta, False)
