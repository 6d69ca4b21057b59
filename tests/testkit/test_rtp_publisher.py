"""The plain-RTP publisher: its SDP, its spec's JSON, and a real publisher process
sending to real UDP sockets on 127.0.0.1; nothing mocked."""

from __future__ import annotations

import select
import signal
import socket
import time

import numpy as np
import pytest
from aiortc.codecs import depayload
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtcpPacket, RtcpSrPacket, RtpPacket

from testkit import bitstream
from testkit.bitstream import split_annexb
from testkit.rtp import (
    ClipSpec,
    Manifest,
    PublisherSpec,
    Quirks,
    RtcpSpec,
    TrackSpec,
    ntp_from_unix,
    offer_sdp,
    parse_answer,
    start_publisher,
    unix_from_ntp,
    wait_manifest,
)

H264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=96)


def test_offer_sdp_shape(media):
    spec = PublisherSpec().with_targets({"video": ("127.0.0.1", 5000, 5001), "audio": ("127.0.0.1", 5002, 5003)})
    sdp = offer_sdp(spec)
    assert sdp.endswith("\r\n")
    lines = sdp.splitlines()
    assert lines[:5] == [
        "v=0",
        "o=- 0 0 IN IP4 127.0.0.1",
        "s=recnode test publisher",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
    ]
    assert lines[5:8] == ["m=video 9 RTP/AVP 96", "a=rtpmap:96 H264/90000", lines[7]]
    assert lines[7].startswith(
        "a=fmtp:96 packetization-mode=1;profile-level-id=42e01f;sprop-parameter-sets="
    )
    assert lines[8:] == [
        "a=sendonly",
        "m=audio 9 RTP/AVP 111",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 minptime=10;useinbandfec=1",
        "a=sendonly",
    ]
    assert offer_sdp(media) == sdp
    assert offer_sdp(PublisherSpec(), video=True, audio=True) == sdp
    assert "m=video" not in offer_sdp(PublisherSpec().with_targets({"audio": ("127.0.0.1", 1, 2)}))
    assert "sprop" not in offer_sdp(media, sprop=False)
    assert "m=audio" not in offer_sdp(media, audio=False)


def test_parse_answer():
    answer = "\r\n".join(
        [
            "v=0",
            "o=- 1 1 IN IP4 127.0.0.1",
            "s=-",
            "c=IN IP4 127.0.0.2",
            "t=0 0",
            "m=video 40000 RTP/AVP 96",
            "a=rtcp:40005",
            "m=audio 40002 RTP/AVP 111",
            "c=IN IP4 127.0.0.3",
            "m=application 0 UDP/DTLS/SCTP webrtc-datachannel",
        ]
    )
    assert parse_answer(answer) == {
        "video": ("127.0.0.2", 40000, 40005),
        "audio": ("127.0.0.3", 40002, 40003),
    }


def test_spec_json_round_trip():
    spec = PublisherSpec(
        video=TrackSpec(96, rtp=("127.0.0.1", 1), ssrc=5), clip=ClipSpec(switch_to=(160, 120), switch_at_s=1.0),
        rtcp=RtcpSpec(bye=True), quirks=Quirks(drop=(("video", 3, 0),)), start_time=12.5, seed=7
    )
    assert PublisherSpec.from_json(spec.to_json()) == spec
    assert PublisherSpec.from_json(PublisherSpec().to_json()) == PublisherSpec()


def _bind_udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def _receive_while_running(socks: dict[str, socket.socket], proc, timeout_s: float):
    """Datagrams per socket as (arrival time.time(), source port, bytes), until
    the process has exited and the sockets are quiet."""
    got: dict[str, list[tuple[float, int, bytes]]] = {name: [] for name in socks}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select(list(socks.values()), [], [], 0.05)
        for name, sock in socks.items():
            while sock in ready:
                try:
                    data, (_, port) = sock.recvfrom(65536)
                except BlockingIOError:
                    break
                got[name].append((time.time(), port, data))
        if not ready and proc.poll() is not None:
            return got
    raise TimeoutError("publisher did not finish")


def _receivers():
    socks = {f"{k}_{p}": _bind_udp() for k in ("video", "audio") for p in ("rtp", "rtcp")}
    port = {name: s.getsockname()[1] for name, s in socks.items()}
    return socks, {k: ("127.0.0.1", port[f"{k}_rtp"], port[f"{k}_rtcp"]) for k in ("video", "audio")}


class Run:
    """One publisher run and everything the test side received."""

    def __init__(self, spec: PublisherSpec, proc, received, manifest: Manifest):
        self.spec, self.proc, self.received, self.manifest = spec, proc, received, manifest

    def rtp(self, kind: str) -> list[tuple[float, int, RtpPacket]]:
        """Received well-formed RTP of the track's SSRC."""
        out = []
        for t, port, data in self.received[f"{kind}_rtp"]:
            if data[0] >> 6 == 2:
                packet = RtpPacket.parse(data)
                if packet.ssrc == self.manifest.ssrcs[kind]:
                    out.append((t, port, packet))
        return out


def publish_to_receivers(manifest_path, **spec_fields) -> Run:
    """Run a publisher process against fresh test sockets until it is done."""
    socks, targets = _receivers()
    spec = PublisherSpec(**spec_fields, manifest_path=str(manifest_path)).with_targets(targets)
    proc = start_publisher(spec)
    try:
        received = _receive_while_running(socks, proc, timeout_s=30)
    finally:
        for sock in socks.values():
            sock.close()
    return Run(spec, proc, received, wait_manifest(spec.manifest_path, proc=proc))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    return publish_to_receivers(
        tmp_path_factory.mktemp("pub") / "manifest.pkl",
        duration_s=2.0,
        quirks=Quirks(
            audio_delay_s=0.25,
            drop=(("video", 0, 1), ("video", 10, -1), ("audio", 5, 0)),
            garbage_datagrams=5,
            foreign_datagrams=4,
            ts_wrap_soon=True,
            seq_wrap_soon=True,
        ),
        seed=1234,
    )


def test_publisher_completes(run):
    assert run.proc.returncode == 0
    m = run.manifest
    assert m.completed and m.spec == run.spec
    media = run.spec.media()
    assert set(m.frames("video")) == set(range(len(media.video)))
    assert set(m.frames("audio")) == set(range(len(media.audio)))
    dropped = {(p.kind, p.frame_index, p.packet_index) for p in m.packets if p.dropped}
    whole_frame = {("video", 10, p.packet_index) for p in m.frames("video")[10]}
    assert dropped == {("video", 0, 1), ("audio", 5, 0)} | whole_frame
    assert all((p.sent_wall is None) == p.dropped for p in m.packets)


def test_every_sent_packet_arrives_and_nothing_else(run):
    for kind in ("video", "audio"):
        sent = [p.datagram for p in run.manifest.track_packets(kind, include_dropped=False)]
        got = [bytes(pkt.serialize()) for _, _, pkt in run.rtp(kind)]
        assert got == sent
        assert {port for _, port, _ in run.rtp(kind)} == {run.manifest.local_ports[f"{kind}_rtp"]}


def test_wraps_happen_mid_stream(run):
    for kind in ("video", "audio"):
        packets = run.manifest.track_packets(kind)
        ts = [p.rtp_timestamp for p in packets]
        seq = [p.sequence_number for p in packets]
        assert 0 < sum(b < a for a, b in zip(ts, ts[1:])) == 1
        assert [(b - a) & 0xFFFF for a, b in zip(seq, seq[1:])] == [1] * (len(seq) - 1)
        assert 0 < seq.index(0) < len(seq) - 1


def test_garbage_and_foreign_datagrams(run):
    m = run.manifest
    assert (m.garbage_sent, m.foreign_sent) == (5, 4)
    rtp_port, foreign_port = m.local_ports["video_rtp"], m.local_ports["foreign"]
    junk = [(port, data) for _, port, data in run.received["video_rtp"] if data[0] >> 6 != 2]
    foreign = [
        (port, RtpPacket.parse(data))
        for _, port, data in run.received["video_rtp"]
        if data[0] >> 6 == 2 and RtpPacket.parse(data).ssrc != m.ssrcs["video"]
    ]
    assert len(junk) == 5 and {port for port, _ in junk} == {rtp_port}
    assert len(foreign) == 4 and {port for port, _ in foreign} == {foreign_port}
    assert {p.ssrc for _, p in foreign} == {m.foreign_ssrc}
    assert {p.payload_type for _, p in foreign} == {96}


def _due_times(run, kind) -> tuple[list[float], list[float]]:
    """When each sent packet and each Sender Report of a track fall due (seconds from
    capture time 0), by the documented cadence: a packet at its capture time (audio
    `audio_delay_s` later), an SR with the track's first packet and then every
    `sr_interval_s` up to its last, ahead of a packet due at the same time."""
    m = run.manifest
    delay = m.spec.quirks.audio_delay_s if kind == "audio" else 0.0
    planned = [p.capture_time_s + delay for p in m.track_packets(kind)]
    sent = [p.capture_time_s + delay for p in m.track_packets(kind, include_dropped=False)]
    reports, t = [], min(planned)
    while t <= max(planned):
        reports.append(t)
        t += m.spec.rtcp.sr_interval_s
    return sent, reports


def test_sender_reports_are_timely_and_truthful(run):
    """Timing from the publisher's own record of what it sent (the manifest), not from
    when the test's socket got around to reading: a busy machine delays both."""
    m = run.manifest
    for kind in ("video", "audio"):
        sent = [r for r in m.sender_reports if r.kind == kind]
        received = [(t, data) for t, _, data in run.received[f"{kind}_rtcp"]]
        assert [data for _, data in received] == [r.datagram for r in sent]  # each one arrived, as sent
        packets_due, reports_due = _due_times(run, kind)
        assert len(sent) == len(reports_due) >= 2
        for report, due, (arrival, data) in zip(sent, reports_due, received, strict=True):
            # on its cadence: not before it is due, nor after the next one is; and
            # behind exactly the packets due before it
            assert m.t0_wall + due - 0.002 <= report.sent_wall < m.t0_wall + due + m.spec.rtcp.sr_interval_s
            assert report.packet_count == sum(t < due for t in packets_due)
            [sr] = [p for p in RtcpPacket.parse(data) if isinstance(p, RtcpSrPacket)]
            assert sr.ssrc == m.ssrcs[kind] and sr.sender_info.packet_count == report.packet_count
            # truthful: NTP of the moment it was sent, paired with that moment's RTP timestamp
            ntp_s = unix_from_ntp(sr.sender_info.ntp_timestamp)
            assert sr.sender_info.ntp_timestamp == ntp_from_unix(report.sent_wall)
            assert report.sent_wall - 0.001 <= arrival  # one host clock: sent, then received
            assert m.capture_wall(kind, sr.sender_info.rtp_timestamp) == pytest.approx(ntp_s, abs=1e-3)
        assert sent[0].packet_count == 0


def test_depayloaded_video_reproduces_access_units(run):
    media = run.spec.media()
    index_of_ts = {p.rtp_timestamp: p.frame_index for p in run.manifest.track_packets("video")}
    frames: dict[int, list[RtpPacket]] = {}
    for _, _, packet in run.rtp("video"):
        frames.setdefault(index_of_ts[packet.timestamp], []).append(packet)
    assert set(frames) == set(range(len(media.video))) - {10}  # frame 10 dropped
    damaged = {0}  # lost one FU-A fragment of the IDR
    intact = sorted(set(frames) - damaged)
    received = {i: b"".join(depayload(H264, p.payload) for p in frames[i]) for i in frames}
    for i in intact:
        assert [p.marker for p in frames[i]] == [0] * (len(frames[i]) - 1) + [1]
        assert split_annexb(received[i]) == split_annexb(media.video[i].data)
    assert bitstream.h264_slice_nals_from_aus(
        received[i] for i in intact
    ) == bitstream.h264_slice_nals_from_aus(media.video[i].data for i in intact)
    assert split_annexb(received[0]) != split_annexb(media.video[0].data)


def test_audio_delay_shifts_audio_send_times(run):
    """From the publisher's record of when it sent each packet: none before it was due,
    audio 0.25 s after its capture time where video goes at its own (the test's socket is
    read late on a busy machine, so arrival times would measure the test)."""
    m = run.manifest

    def lateness(kind):
        return [p.sent_wall - m.t0_wall - p.capture_time_s for p in m.track_packets(kind, include_dropped=False)]

    for kind, delay in (("video", 0.0), ("audio", 0.25)):
        assert min(lateness(kind)) >= delay - 0.002
    assert np.median(lateness("audio")) - np.median(lateness("video")) == pytest.approx(0.25, abs=0.02)


def test_sigterm_stops_cleanly_with_partial_manifest(tmp_path):
    socks, targets = _receivers()
    spec = PublisherSpec(
        duration_s=6.0,
        start_time=time.time() + 1.0,
        manifest_path=str(tmp_path / "manifest.pkl"),
    ).with_targets({kind: (host, rtp, None) for kind, (host, rtp, _) in targets.items()})  # no RTCP
    proc = start_publisher(spec)
    try:
        for _ in range(6):  # a few packets out, then the signal
            assert select.select([socks["video_rtp"]], [], [], 30)[0], "nothing sent"
            socks["video_rtp"].recv(65536)
        signalled = time.time()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        for sock in socks.values():
            sock.close()
    manifest = wait_manifest(spec.manifest_path, timeout_s=1)
    assert not manifest.completed and manifest.end_wall >= signalled
    assert manifest.t0_wall == spec.start_time
    video = manifest.track_packets("video")
    # it stopped where the signal found it (a busy machine may hold the signal back a while;
    # nothing that fell due later went out), well before its clip's end
    assert 5 < len(video) and max(p.frame_index for p in video) < len(spec.media().video) - 1
    assert all(manifest.t0_wall + p.capture_time_s <= manifest.end_wall for p in manifest.packets)
    assert all(p.sent_wall is not None for p in manifest.packets)  # none recorded half-sent


def test_looped_clip_repeats_with_running_timestamps(tmp_path):
    """Long benchmark runs repeat a short clip: frame indices, capture times, RTP
    timestamps and sequence numbers run on; the same access units come round again."""
    run = publish_to_receivers(tmp_path / "manifest.pkl", duration_s=2.5, loop_clip_s=1.0, keep_sent_bytes=False,
                               seed=7)
    manifest = run.manifest
    clip = run.spec.clip_media()
    video = manifest.frames("video")
    assert sorted(video) == list(range(75)) and len(clip.video) == 30
    captures = [video[i][0].capture_time_s for i in range(75)]
    assert captures == pytest.approx([i / 30 for i in range(75)])
    stamps = [video[i][0].rtp_timestamp for i in range(75)]
    assert {(b - a) & 0xFFFFFFFF for a, b in zip(stamps, stamps[1:])} == {3000}
    assert all(p.datagram == b"" for p in manifest.packets)  # forgotten once sent
    payloads = {}
    for _, _, packet in run.rtp("video"):
        payloads.setdefault(packet.timestamp, []).append(packet.payload)
    units = [payloads[s] for s in stamps]
    assert units[30:60] == units[:30] and units[60:] == units[:15]
    audio = manifest.frames("audio")
    audio_captures = [audio[i][0].capture_time_s for i in sorted(audio)]
    assert audio_captures[-1] > 2.45 and {round(b - a, 6) for a, b in zip(audio_captures, audio_captures[1:])} \
        == {0.02}
