"""VP8 over RTP (RFC 7741): descriptors, frame starts, depayloading, key-frame headers,
with real libvpx frames and aiortc's own VP8 packetizer; and the video track's loss gate
driven by the jitter buffer."""

from __future__ import annotations

import itertools

import pytest
from aiortc.codecs.vpx import Vp8Encoder, VpxPayloadDescriptor
from aiortc.rtp import RtpPacket

from contract.codes import MediaKind
from contract.worker import TrackSpec
from testkit.media import make_test_media
from workers.codecs import Vp8Codec, video_codec, vp8
from workers.jitter import JitterBuffer
from workers.tracks import VideoTrack

VP8_TRACK = TrackSpec(MediaKind.VIDEO, "VP8", 97, 90000)


@pytest.fixture(scope="module")
def media():
    return make_test_media(2.0, video_codec="vp8")


# -- payload descriptor -----------------------------------------------------------


@pytest.mark.parametrize("payload, expected", [
    (b"\x10", dict(size=1, start=True, partition_id=0, non_reference=False)),
    (b"\x03", dict(size=1, start=False, partition_id=3)),
    (b"\x30", dict(size=1, start=True, non_reference=True)),
    (b"\x90\x80\x7f", dict(size=3, start=True, picture_id=0x7F)),  # 7-bit PictureID
    (b"\x90\x80\x81\x23", dict(size=4, picture_id=0x0123)),  # 15-bit PictureID
    (b"\x90\x40\x05", dict(size=3, picture_id=None, tl0_pic_index=5)),
    (b"\x90\x20\xa0", dict(size=3, temporal_layer=2, layer_sync=True, key_index=None)),
    (b"\x90\x10\x1f", dict(size=3, temporal_layer=None, key_index=31)),
    (b"\x90\xf0\xff\xff\x07\x45", dict(size=6, picture_id=0x7FFF, tl0_pic_index=7, temporal_layer=1,
                                        layer_sync=False, key_index=5)),
    (b"\x80\x00", dict(size=2, start=False, picture_id=None)),  # X set, nothing in it
])
def test_descriptor_variants(payload, expected):
    descriptor = vp8.parse_descriptor(payload + b"\x00payload")
    for name, value in expected.items():
        assert getattr(descriptor, name) == value, name


def test_descriptors_aiortc_writes_parse_the_same():
    for picture_id, tl0, tid, keyidx, start, pid in itertools.product(
            (None, 5, 0x7FFF), (None, 0, 200), (None, (0, 0), (3, 1)), (None, 0, 17), (0, 1), (0, 7)):
        written = bytes(VpxPayloadDescriptor(start, pid, picture_id, tl0, tid, keyidx))
        descriptor = vp8.parse_descriptor(written + b"\xab")
        expect_tid = tid if tid is not None else (None, None)
        assert (descriptor.size, descriptor.start, descriptor.partition_id, descriptor.picture_id,
                descriptor.tl0_pic_index, descriptor.temporal_layer, descriptor.layer_sync, descriptor.key_index) \
            == (len(written), bool(start), pid, picture_id, tl0, expect_tid[0],
                None if tid is None else bool(tid[1]), keyidx)


@pytest.mark.parametrize("payload", [b"", b"\x90", b"\x90\x80", b"\x90\x80\x81", b"\x90\x40", b"\x90\x20",
                                     b"\x90\x10", b"\x90\xc0\x05"])
def test_truncated_descriptors_raise_and_start_nothing(payload):
    with pytest.raises(ValueError):
        vp8.parse_descriptor(payload)
    assert not vp8.payload_starts_frame(payload)


def test_frame_start_is_s1_pid0():
    assert vp8.payload_starts_frame(b"\x10\x00")
    assert vp8.payload_starts_frame(b"\x90\x80\x81\x23\x00")
    assert not vp8.payload_starts_frame(b"\x00\x00")  # a continuation
    assert not vp8.payload_starts_frame(b"\x11\x00")  # the start of partition 1


# -- frames ---------------------------------------------------------------------------


def test_libvpx_frames_survive_aiortcs_packetizer(media):
    for index, au in enumerate(media.video):
        payloads = Vp8Encoder._packetize(au.data, picture_id=index)
        assert vp8.payload_starts_frame(payloads[0])
        assert not any(vp8.payload_starts_frame(p) for p in payloads[1:])
        assert vp8.depayload_frame(payloads) == au.data
        assert vp8.is_keyframe(au.data) == au.keyframe
    assert len([au for au in media.video if len(Vp8Encoder._packetize(au.data, 0)) > 1]) >= 1  # a real split


def test_keyframe_size(media):
    key = media.video[0].data
    assert vp8.keyframe_size(key) == (320, 240)
    scaled = bytearray(key)
    scaled[7] |= 0xC0  # horizontal scale bits
    scaled[9] |= 0x40  # vertical scale bits
    assert vp8.keyframe_size(bytes(scaled)) == (320, 240)
    assert Vp8Codec.keyframe_size(key) == (320, 240)
    with pytest.raises(ValueError):
        vp8.keyframe_size(media.video[1].data)  # not a key frame
    with pytest.raises(ValueError):
        vp8.keyframe_size(key[:9])


@pytest.mark.parametrize("payloads", [
    [],  # nothing at all
    [b"\x10"],  # a descriptor and no frame tag
    [b"\x10\x00\x00"[:2]],  # a frame tag cut short
    [b"\x00\x01\x02\x03"],  # the frame's first packet is missing
    [b"\x10\x50\x00\x00\x9d\x01\x2a\x40\x01"],  # key frame header cut short
    [b"\x10\x50\x00\x00\x9d\x01\x2b\x40\x01\xf0\x00"],  # key frame with a wrong start code
    [b"\x10\x50\x00\x00\x9d\x01\x2a\x00\x00\x00\x00"],  # key frame of size 0
    [b"\x10\x51\x00\x00", b"\x90"],  # a later packet with a truncated descriptor
])
def test_malformed_frames_raise(payloads):
    with pytest.raises(ValueError):
        vp8.Vp8Codec(VP8_TRACK).depayload(payloads)


def test_padding_payloads_are_skipped(media):
    payloads = Vp8Encoder._packetize(media.video[1].data, picture_id=1)
    assert vp8.depayload_frame([b"", *payloads, b""]) == media.video[1].data


def test_codec_lookup():
    assert video_codec("VP8") is Vp8Codec and video_codec("vp8") is Vp8Codec
    with pytest.raises(ValueError):
        video_codec("VP9")


# -- the loss gate, over the jitter buffer ----------------------------------------------


def _packets(media, first_seq: int = 100):
    """RTP packets of every frame, as aiortc's VP8 sender makes them."""
    seq = first_seq
    frames = []
    for index, au in enumerate(media.video):
        payloads = Vp8Encoder._packetize(au.data, picture_id=index)
        packets = []
        for n, payload in enumerate(payloads):
            packet = RtpPacket(payload_type=97, sequence_number=seq, timestamp=3000 * index, ssrc=1,
                               marker=int(n == len(payloads) - 1))
            packet.payload = payload
            packets.append(packet)
            seq += 1
        frames.append(packets)
    return frames


def _run(frames, lose=frozenset()):
    requests = []
    track = VideoTrack(VP8_TRACK, lambda: requests.append(1))
    jitter = JitterBuffer(frame_per_packet=False, max_wait=0.0, starts_frame=track.codec.payload_starts_frame)
    out = []
    now = 0.0
    for packets in frames:
        for packet in packets:
            if packet.sequence_number in lose:
                continue
            now += 0.001
            for assembled in jitter.push(packet, now) + jitter.poll(now + 1.0):
                frame = track.accept(assembled)
                if frame is not None:
                    out.append(frame)
    return out, track, requests


def test_intact_stream_passes_unchanged(media):
    out, track, requests = _run(_packets(media))
    assert [f.data for f in out] == [au.data for au in media.video]
    assert [f.keyframe for f in out] == [au.keyframe for au in media.video]
    assert [f.rtp_timestamp for f in out] == [3000 * i for i in range(len(media.video))]
    assert requests == [] and track.stats.frames == len(media.video)


def test_after_a_loss_frames_wait_for_a_key_frame(media):
    frames = _packets(media)
    lost = frames[10][0].sequence_number  # the first packet of frame 10: its start is gone
    out, track, requests = _run(frames, lose={lost})
    assert [f.data for f in out] == [au.data for au in media.video[:10] + media.video[30:]]
    assert out[10].keyframe
    assert requests == [1] and track.stats.keyframe_requests == 1
    assert track.stats.dropped_waiting_keyframe == 19  # frames 11..29; frame 10 never got out


def test_a_malformed_frame_is_dropped_like_a_lost_one(media):
    frames = _packets(media)
    [broken] = frames[5]
    broken.payload = broken.payload[:4] + b"\x01"  # aiortc's 4-byte descriptor, then a 1-byte "frame"
    out, track, requests = _run(frames)
    assert [f.data for f in out] == [au.data for au in media.video[:5] + media.video[30:]]
    assert track.stats.dropped_malformed == 1 and requests == [1]
