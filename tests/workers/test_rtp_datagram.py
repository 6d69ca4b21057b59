"""The plain-RTP input's own header parser agrees with aiortc's on every shape of packet."""

import random
import struct

import pytest
from aiortc.rtp import RtpPacket

from workers.inputs.rtp import RtpDatagram

FIELDS = ("marker", "payload_type", "sequence_number", "timestamp", "ssrc", "payload")


def packet(rng: random.Random, csrcs: int, extension_words: int | None, padding: int) -> bytes:
    first = 0x80 | csrcs | (0x10 if extension_words is not None else 0) | (0x20 if padding else 0)
    data = struct.pack("!BBHII", first, rng.getrandbits(8), rng.getrandbits(16), rng.getrandbits(32),
                       rng.getrandbits(32))
    data += b"".join(struct.pack("!I", rng.getrandbits(32)) for _ in range(csrcs))
    if extension_words is not None:
        # 0x5555: a profile whose contents aiortc keeps raw (it parses 0xBEDE ones)
        data += struct.pack("!HH", 0x5555, extension_words) + rng.randbytes(4 * extension_words)
    data += rng.randbytes(rng.randrange(0, 1300))
    if padding:
        data += bytes(padding - 1) + bytes([padding])
    return data


def test_same_fields_as_aiortc_for_csrcs_extensions_and_padding():
    rng = random.Random(7)
    for _ in range(2000):
        data = packet(rng, rng.randrange(0, 16), rng.choice([None, 0, 1, 5]), rng.choice([0, 0, 1, 4, 255]))
        ours, theirs = RtpDatagram.parse(data), RtpPacket.parse(data)
        assert [getattr(ours, f) for f in FIELDS] == [getattr(theirs, f) for f in FIELDS]


@pytest.mark.parametrize("data", [
    b"",
    b"\x80" * 11,  # shorter than the header
    bytes([0x40]) + bytes(11),  # version 1
    bytes([0x83]) + bytes(11) + bytes(8),  # 3 CSRCs announced, 2 present
    bytes([0x90]) + bytes(11) + b"\xbe\xde",  # truncated extension header
    bytes([0x90]) + bytes(11) + b"\xbe\xde\x00\x04" + bytes(4),  # extension longer than the packet
    bytes([0xA0]) + bytes(11) + b"ab\x00",  # padding length 0
    bytes([0xA0]) + bytes(11) + b"ab\x09",  # padding longer than the payload
])
def test_malformed_packets_raise_value_error_like_aiortc(data):
    with pytest.raises(ValueError):
        RtpPacket.parse(data)
    with pytest.raises(ValueError):
        RtpDatagram.parse(data)
