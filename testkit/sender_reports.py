"""RTCP Sender Reports a broken or hostile publisher might send (both test publishers use them)."""

from __future__ import annotations

from aiortc.rtp import RtcpSenderInfo, RtcpSrPacket

FAR_FUTURE_NTP_S = 0xFFFF0000  # NTP seconds in 2036, just before the era wraps
UNRELATED_RTP = 0x7FFF0000  # added to the true RTP timestamp: half the 32-bit space away
OTHER_SSRC = 0x5A5A5A5A  # xor-ed into the true SSRC: a source that sends no media


def hostile_reports(true: RtcpSrPacket) -> list[RtcpSrPacket]:
    """What follows `true`: NTP far in the past (1900) and the future, an RTP timestamp
    unrelated to the media, NTP 0 <-> RTP 0 (aiortc's before it has sent media), last
    (so it is the latest before media starts) one for an SSRC that sends no media."""
    info = true.sender_info

    def report(ntp: int, rtp: int, ssrc: int = true.ssrc) -> RtcpSrPacket:
        return RtcpSrPacket(ssrc=ssrc, sender_info=RtcpSenderInfo(
            ntp_timestamp=ntp, rtp_timestamp=rtp & 0xFFFFFFFF,
            packet_count=info.packet_count, octet_count=info.octet_count))

    return [report(1 << 32, info.rtp_timestamp), report(FAR_FUTURE_NTP_S << 32, info.rtp_timestamp),
            report(info.ntp_timestamp, info.rtp_timestamp + UNRELATED_RTP), report(0, 0),
            report(info.ntp_timestamp, info.rtp_timestamp, ssrc=true.ssrc ^ OTHER_SSRC)]
