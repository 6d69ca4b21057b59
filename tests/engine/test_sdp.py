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
a=fmtp:96 packetization-mode=1;profile-level-id=42e01f;sprop-parameter-sets=Z0LAHtkA,aM4PyA==
a=sendonly
m=audio 9 RTP/AVP 111
a=rtpmap:111 opus/48000/2
a=rtcp-mux
"""


def test_offer_parses_into_tracks():
    offer = parse_rtp_offer(OFFER)
    video, audio = offer.tracks
    assert (video.kind, video.codec, video.payload_type, video.clock_rate) == (MediaKind.VIDEO, "H264", 96, 90000)
    assert video.fmtp_value("sprop-parameter-sets") == "Z0LAHtkA,aM4PyA=="
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
