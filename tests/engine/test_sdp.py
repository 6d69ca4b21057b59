import base64
import re

import pytest

from contract.codes import MediaKind
from engine.sdp import SdpError, parse_rtp_offer, rtp_answer

OFFER = """v=0
o=- 0 0 IN IP4 127.0.0.1
s=x
c=IN IP4 127.0.0.1
t=0 0
m=video 9 RTP/AVP 97 96
a=rtpmap:97 VP8/90000
a=rtpmap:96 H264/90000
a=fmtp:96 packetization-mode=1;profile-level-id=42e01f;sprop-parameter-sets=Z0LAH9kBQfoQAAADABAAAAMDwPFCmSA=,aMuMsg==
a=sendonly
m=audio 9 RTP/AVP 111
a=rtpmap:111 opus/48000/2
a=rtcp-mux
"""


def test_offer_parses_into_tracks():
    offer = parse_rtp_offer(OFFER)
    video, audio = offer.tracks
    assert (video.kind, video.codec, video.payload_type, video.clock_rate) == (MediaKind.VIDEO, "H264", 96, 90000)
    assert video.fmtp_value("sprop-parameter-sets") == "Z0LAH9kBQfoQAAADABAAAAMDwPFCmSA=,aMuMsg=="
    assert (audio.kind, audio.codec, audio.payload_type, audio.channels) == (MediaKind.AUDIO, "opus", 111, 2)
    assert offer.rtcp_mux == (False, True)


def test_answer_lists_ports():
    offer = parse_rtp_offer(OFFER)
    answer = rtp_answer(offer, "10.1.2.3", (40000, 40002))
    assert "c=IN IP4 10.1.2.3" in answer
    assert "m=video 40000 RTP/AVP 96" in answer and "a=rtcp:40001" in answer
    assert "m=audio 40002 RTP/AVP 111" in answer and "a=rtcp-mux" in answer


@pytest.mark.parametrize("text, message", [
    ("", "must start with v=0"),
    ("hello", "must start with v=0"),
    ("v=0\n", "no m-line"),
    ("v=0\nm=video\n", "malformed m-line"),
    ("v=0\nm=video 9 RTP/AVP x\n", "malformed payload types"),
    ("v=0\nm=video 9 UDP/TLS/RTP/SAVPF 96\n", "unsupported transport"),
    ("v=0\nm=video 9 TCP 96\n", "unsupported transport"),
    ("v=0\nm=application 9 RTP/AVP 96\n", "unsupported media"),
    ("v=0\nm=video 9 RTP/AVP 97\na=rtpmap:97 VP8/90000\n", "offers no H264"),
    ("v=0\nm=audio 9 RTP/AVP 0\na=rtpmap:0 PCMU/8000\n", "offers no opus"),
    ("v=0\nm=video 9 RTP/AVP 96\na=rtpmap:96 H264\n", "malformed rtpmap"),
    ("v=0\nm=video 9 RTP/AVP 96\na=rtpmap:96 H264/90000\na=fmtp:96 packetization-mode=2\n", "packetization-mode 2"),
    ("v=0\nm=video 9 RTP/AVP 96\na=rtpmap:96 H264/90000\na=recvonly\n", "is recvonly"),
    ("v=0\nm=video 9 RTP/AVP 96\na=rtpmap:96 H264/90000\nm=video 9 RTP/AVP 96\na=rtpmap:96 H264/90000\n",
     "more than one video"),
    ("v=0\nbogus\n", "malformed SDP line"),
    ("v=0\n" + "a=x\n" * 5000, "too large"),
])
def test_bad_offers_have_reasons(text, message):
    with pytest.raises(SdpError, match=message):
        parse_rtp_offer(text)


SPROP = "Z0LAH9kBQfoQAAADABAAAAMDwPFCmSA=,aMuMsg=="  # a real SPS and PPS (README's example)
KEY = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e"  # base64 of a 30-byte master key || salt


def _video(rtpmap="96 H264/90000", pts="96", fmtp="packetization-mode=1", transport="RTP/AVP", extra=()):
    lines = ["v=0", f"m=video 9 {transport} {pts}", f"a=rtpmap:{rtpmap}", f"a=fmtp:96 {fmtp}", *extra]
    return "\r\n".join(lines) + "\r\n"


def _audio(rtpmap="111 opus/48000/2", pts="111"):
    return f"v=0\r\nm=audio 9 RTP/AVP {pts}\r\na=rtpmap:{rtpmap}\r\n"


@pytest.mark.parametrize("text, reason, line", [
    (_video("96 H264/0"), "clock rate of 90000 Hz, not 0", "a=rtpmap:96 H264/0"),
    (_video("96 H264/1"), "clock rate of 90000 Hz, not 1", "a=rtpmap:96 H264/1"),
    (_video("96 H264/90000/2"), "H264 is H264/90000", "a=rtpmap:96 H264/90000/2"),
    (_audio("111 opus/0/2"), "clock rate of 48000 Hz, not 0", "a=rtpmap:111 opus/0/2"),
    (_audio("111 opus/48000"), "opus is opus/48000/2", "a=rtpmap:111 opus/48000"),
    (_audio("111 opus/48000/1"), "opus is opus/48000/2", "a=rtpmap:111 opus/48000/1"),
    (_video("128 H264/90000", pts="128"), "payload type 128 is outside 0-127", "m=video 9 RTP/AVP 128"),
    (_video("300 H264/90000", pts="300"), "payload type 300 is outside 0-127", "m=video 9 RTP/AVP 300"),
    (_video("300 H264/90000"), "payload type 300 is outside 0-127", "a=rtpmap:300 H264/90000"),
    (_video("72 H264/90000", pts="72"), "collides with RTCP", "a=rtpmap:72 H264/90000"),
    (_video(fmtp="sprop-parameter-sets=Z0LAH9kB!!,aMuMsg=="), "invalid sprop-parameter-sets: invalid base64",
     "a=fmtp:96 sprop-parameter-sets=Z0LAH9kB!!,aMuMsg=="),
    (_video(fmtp="sprop-parameter-sets=ZWVl"), "a NAL unit of type 5, not an SPS or PPS",
     "a=fmtp:96 sprop-parameter-sets=ZWVl"),
    (_video(fmtp="sprop-parameter-sets=Z0LAHtkA,aMuMsg=="), "the SPS does not parse",
     "a=fmtp:96 sprop-parameter-sets=Z0LAHtkA,aMuMsg=="),
    (_video(extra=["a=ssrc:abc cname:x"]), "an SSRC is a number", "a=ssrc:abc cname:x"),
    (_video(extra=["a=ssrc:4294967296 cname:x"]), "an SSRC is a number", "a=ssrc:4294967296 cname:x"),
])
def test_bad_values_name_the_line(text, reason, line):
    with pytest.raises(SdpError) as caught:
        parse_rtp_offer(text)
    assert reason in str(caught.value) and repr(line) in str(caught.value)


def test_static_payload_types_are_taken_when_the_rtpmap_names_our_codec():
    assert parse_rtp_offer(_video("0 H264/90000", pts="0")).tracks[0].payload_type == 0
    assert parse_rtp_offer(_audio("8 opus/48000/2", pts="8")).tracks[0].payload_type == 8


def test_the_offered_ssrc_is_the_only_one_taken():
    assert parse_rtp_offer(_video()).tracks[0].ssrc is None
    assert parse_rtp_offer(_video(extra=["a=ssrc:1234 cname:x", "a=ssrc:1234 msid:a b"])).tracks[0].ssrc == 1234
    with_rtx = _video(extra=["a=ssrc-group:FID 55 66", "a=ssrc:55 cname:x", "a=ssrc:66 cname:x"])
    assert parse_rtp_offer(with_rtx).tracks[0].ssrc == 55


def test_the_announcer_is_the_source_host_when_given():
    assert parse_rtp_offer(_video()).tracks[0].source_host is None
    assert parse_rtp_offer(_video(), source_host="192.0.2.1").tracks[0].source_host == "192.0.2.1"


def _srtp(*crypto, transport="RTP/SAVP"):
    return _video(transport=transport, extra=[f"a=crypto:{c}" for c in crypto])


def test_an_srtp_offer_is_answered_with_the_nodes_own_key():
    offer = parse_rtp_offer(_srtp("7 AES_CM_128_HMAC_SHA1_32 inline:" + KEY), answer_key_secret=b"node secret")
    [track] = offer.tracks
    assert track.srtp_suite == "AES_CM_128_HMAC_SHA1_32"
    assert track.srtp_remote_key == base64.b64decode(KEY) and len(track.srtp_local_key) == 30
    assert track.srtp_local_key != track.srtp_remote_key
    answer = rtp_answer(offer, "10.1.2.3", (40000,))
    assert "m=video 40000 RTP/SAVP 96" in answer
    local = base64.b64encode(track.srtp_local_key).decode()
    assert f"a=crypto:7 AES_CM_128_HMAC_SHA1_32 inline:{local}\r\n" in answer
    assert KEY not in answer and KEY not in repr(offer)  # the publisher's key stays with the node
    assert local not in repr(offer)


def test_the_answer_key_is_the_same_for_the_same_offer_and_secret_only():
    text = _srtp("1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY, transport="RTP/SAVPF")
    key = parse_rtp_offer(text, answer_key_secret=b"a").tracks[0].srtp_local_key
    assert parse_rtp_offer(text, answer_key_secret=b"a").tracks[0].srtp_local_key == key  # a restored stream
    assert parse_rtp_offer(text, answer_key_secret=b"b").tracks[0].srtp_local_key != key
    other = text.replace(KEY, base64.b64encode(bytes(30)).decode())
    assert parse_rtp_offer(other, answer_key_secret=b"a").tracks[0].srtp_local_key != key


def test_the_first_supported_suite_is_taken():
    text = _srtp("1 AEAD_AES_256_GCM inline:" + KEY, "2 AES_CM_128_HMAC_SHA1_80 inline:" + KEY)
    offer = parse_rtp_offer(text, answer_key_secret=b"a")
    assert offer.crypto_tags == (2,) and offer.tracks[0].srtp_suite == "AES_CM_128_HMAC_SHA1_80"


@pytest.mark.parametrize("text, reason", [
    (_srtp(), "RTP/SAVP needs an a=crypto line"),
    (_srtp("1 AEAD_AES_256_GCM inline:" + KEY), "needs an a=crypto line with a supported suite"),
    (_srtp("1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY[:-4]), "needs a 30-byte master key and salt, got 27"),
    (_srtp("1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY[:-1] + "!"), "the key is not base64"),
    (_srtp("1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY + "|2^20|1:4"), "an MKI is not supported"),
    (_srtp("1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY + ";inline:" + KEY), "more than one key"),
    (_srtp("1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY + " UNENCRYPTED_SRTP"), "session parameters"),
    (_srtp("x AES_CM_128_HMAC_SHA1_80 inline:" + KEY), "the crypto tag must be 1-9 digits"),
    (_srtp("1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY, transport="RTP/AVP"), "a=crypto needs transport RTP/SAVP"),
])
def test_bad_sdes_is_refused_without_showing_the_key(text, reason):
    with pytest.raises(SdpError, match=re.escape(reason)) as caught:
        parse_rtp_offer(text, answer_key_secret=b"a")
    assert KEY[:20] not in str(caught.value)


def test_a_lifetime_is_accepted():
    text = _srtp("1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY + "|2^31")
    assert parse_rtp_offer(text, answer_key_secret=b"a").tracks[0].srtp_suite == "AES_CM_128_HMAC_SHA1_80"


def test_require_srtp_refuses_plain_rtp_naming_the_m_line():
    with pytest.raises(SdpError, match=re.escape("this node takes only SRTP")) as caught:
        parse_rtp_offer(OFFER, require_srtp=True)
    assert "'m=video 9 RTP/AVP 97 96'" in str(caught.value)
    assert parse_rtp_offer(_srtp("1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY), answer_key_secret=b"a",
                           require_srtp=True).tracks[0].srtp_suite
