"""H.264 sequence parameter sets: profile, level and coded size (after cropping) from an
SPS, and SDP `sprop-parameter-sets` (RFC 6184)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

NAL_SPS = 7  # nal_unit_type of a sequence parameter set (H.264 Table 7-1)
# profile_idc values whose SPS carries chroma_format_idc, bit depths and scaling lists.
_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
_MAX_EXP_GOLOMB_ZEROS = 31


def unescape_rbsp(data: bytes) -> bytes:
    """Remove emulation-prevention bytes (00 00 03 -> 00 00).

    `bytes.replace` scans left to right without overlap, which is exactly the rule: the
    zero count restarts after each removed 03.
    """
    return data.replace(b"\x00\x00\x03", b"\x00\x00")


class BitReader:
    """MSB-first bit reader with Exp-Golomb codes, for RBSP (already unescaped); H.265 uses it too."""

    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "big")
        self._size = len(data) * 8
        self._pos = 0

    def u(self, bits: int) -> int:
        if self._pos + bits > self._size:
            raise ValueError("SPS is truncated")
        self._pos += bits
        return (self._value >> (self._size - self._pos)) & ((1 << bits) - 1)

    def flag(self) -> bool:
        return bool(self.u(1))

    def ue(self) -> int:
        zeros = 0
        while not self.u(1):
            zeros += 1
            if zeros > _MAX_EXP_GOLOMB_ZEROS:
                raise ValueError("invalid Exp-Golomb code in SPS")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        code = self.ue()
        return (code + 1) // 2 if code & 1 else -(code // 2)


@dataclass(frozen=True, slots=True)
class SpsInfo:
    """What a muxer needs from an SPS: profile and level, and the displayed size."""

    profile_idc: int
    constraint_flags: int  # the whole byte: constraint_set0_flag is its top bit
    level_idc: int
    width: int
    height: int

    @property
    def profile_level_id(self) -> str:
        """The SDP / RFC 6184 form, e.g. '42e01f'."""
        return f"{self.profile_idc:02x}{self.constraint_flags:02x}{self.level_idc:02x}"

    @property
    def codec_string(self) -> str:
        """RFC 6381 codec string for HLS / DASH, e.g. 'avc1.42e01f'."""
        return f"avc1.{self.profile_level_id}"


def parse_sps(nal: bytes) -> SpsInfo:
    """Parse a sequence parameter set NAL unit (with its header byte) up to the cropping.

    Handles emulation-prevention bytes, the high-profile fields (chroma format, bit
    depths, scaling lists), field coding (frame_mbs_only_flag = 0) and frame cropping.
    Raises ValueError for anything that is not a well-formed SPS.
    """
    if not nal or nal[0] & 0x1F != NAL_SPS:
        raise ValueError("not an SPS NAL unit")
    reader = BitReader(unescape_rbsp(nal[1:]))
    profile_idc = reader.u(8)
    constraint_flags = reader.u(8)
    level_idc = reader.u(8)
    if reader.ue() > 31:
        raise ValueError("seq_parameter_set_id out of range")

    chroma_format_idc = 1
    separate_colour_plane = False
    if profile_idc in _HIGH_PROFILES:
        chroma_format_idc = reader.ue()
        if chroma_format_idc > 3:
            raise ValueError("chroma_format_idc out of range")
        if chroma_format_idc == 3:
            separate_colour_plane = reader.flag()
        reader.ue()  # bit_depth_luma_minus8
        reader.ue()  # bit_depth_chroma_minus8
        reader.flag()  # qpprime_y_zero_transform_bypass_flag
        if reader.flag():  # seq_scaling_matrix_present_flag
            for index in range(8 if chroma_format_idc != 3 else 12):
                if reader.flag():  # seq_scaling_list_present_flag[index]
                    _skip_scaling_list(reader, 16 if index < 6 else 64)

    reader.ue()  # log2_max_frame_num_minus4
    poc_type = reader.ue()
    if poc_type == 0:
        reader.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        reader.flag()  # delta_pic_order_always_zero_flag
        reader.se()  # offset_for_non_ref_pic
        reader.se()  # offset_for_top_to_bottom_field
        for _ in range(reader.ue()):  # num_ref_frames_in_pic_order_cnt_cycle
            reader.se()
    elif poc_type != 2:
        raise ValueError("pic_order_cnt_type out of range")
    reader.ue()  # max_num_ref_frames
    reader.flag()  # gaps_in_frame_num_value_allowed_flag
    width_mbs = reader.ue() + 1
    height_map_units = reader.ue() + 1
    frame_mbs_only = reader.flag()
    if not frame_mbs_only:
        reader.flag()  # mb_adaptive_frame_field_flag
    reader.flag()  # direct_8x8_inference_flag

    field_factor = 1 if frame_mbs_only else 2
    width = width_mbs * 16
    height = height_map_units * 16 * field_factor
    if reader.flag():  # frame_cropping_flag
        left, right, top, bottom = (reader.ue() for _ in range(4))
        chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
        if chroma_array_type == 0:
            crop_x, crop_y = 1, field_factor
        else:
            sub_width = 1 if chroma_format_idc == 3 else 2
            sub_height = 2 if chroma_format_idc == 1 else 1
            crop_x, crop_y = sub_width, sub_height * field_factor
        width -= crop_x * (left + right)
        height -= crop_y * (top + bottom)
    if width <= 0 or height <= 0:
        raise ValueError("SPS cropping leaves no picture")
    return SpsInfo(profile_idc, constraint_flags, level_idc, width, height)


def _skip_scaling_list(reader: BitReader, size: int) -> None:
    last_scale = next_scale = 8
    for _ in range(size):
        if next_scale:
            next_scale = (last_scale + reader.se() + 256) % 256
            if not next_scale:
                return  # useDefaultScalingMatrixFlag (at j == 0) or the rest repeats
        last_scale = next_scale


def parse_sprop_parameter_sets(value: str) -> list[bytes]:
    """NAL units of an SDP fmtp `sprop-parameter-sets` value (comma-separated base64).

    Missing base64 padding is tolerated (some senders omit it); empty items skipped.
    """
    nals: list[bytes] = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            nal = base64.b64decode(item + "=" * (-len(item) % 4), validate=True)
        except binascii.Error as exc:
            raise ValueError(f"invalid base64 in sprop-parameter-sets: {item!r}") from exc
        if nal:
            nals.append(nal)
    return nals
