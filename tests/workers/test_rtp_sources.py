"""Whom an RtpInput listens to, on real sockets: stray and hostile senders, a publisher
that restarts, the pinned source, and SRTP (keys as SDES hands them out)."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import pytest
from aiortc.rtp import RTCP_PSFB_PLI, RtcpPacket, RtcpPsfbPacket
from pylibsrtp import Policy, Session

from contract.codes import MediaKind
from contract.tuning import MediaTuning
from contract.worker import StreamSpec, TrackSpec, WorkerConfig
from tests.workers.test_rtp_input import SSRC, _free_port_pair, _plis, _rtp, _sr
from workers.inputs.rtp import RtpInput

V = MediaKind.VIDEO
KEY_FRAME, P_FRAME = b"\x65\x88\x80\x10", b"\x41\x88\x80\x10"


def _sender(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    return sock


class Scene:
    """One video track's RtpInput on 127.0.0.1 and the senders of a test."""

    def __init__(self, tuning: MediaTuning = MediaTuning(sync_wait_for_sr_s=0.0), **track):
        self.port = _free_port_pair()
        spec = TrackSpec(V, "H264", 96, 90000, **track)
        self.frames: list = []
        self.reports: list = []
        self.input = RtpInput(WorkerConfig(StreamSpec("r", "s", "u", (spec,)), "127.0.0.1", (self.port,), tuning),
                              self.frames.append, lambda *a: self.reports.append(a))
        self.sockets: list[socket.socket] = []
        asyncio.run(self.input.start())

    def sender(self, host: str = "127.0.0.1") -> socket.socket:
        sock = _sender(host)
        self.sockets.append(sock)
        return sock

    def send(self, sock: socket.socket, data: bytes, rtcp: bool = False) -> None:
        sock.sendto(data, ("127.0.0.1", self.port + 1 if rtcp else self.port))

    def settle(self, until, timeout: float = 3.0) -> dict:
        """Tick until the video track's stats satisfy `until` (what was sent has been taken
        in: loopback delivers in a softirq, late on a loaded machine), or the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            self.input.tick(time.monotonic())
            stats = self.input.stats()["video"]
            if until(stats) or time.monotonic() > deadline:
                return stats
            time.sleep(0.01)

    def close(self) -> None:
        self.input.close()
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def scene_factory():
    scenes = []

    def make(**options) -> Scene:
        scenes.append(Scene(**options))
        return scenes[-1]

    yield make
    for scene in scenes:
        scene.close()


def test_garbage_and_a_wrong_payload_type_first_do_not_take_the_stream(scene_factory):
    scene = scene_factory()
    stray, publisher = scene.sender(), scene.sender()
    scene.send(stray, b"hello")
    scene.send(stray, _rtp(1, 3000, KEY_FRAME, ssrc=5, payload_type=97))  # valid RTP, not of the offer
    scene.settle(lambda s: s["garbage"] == 2)
    scene.send(publisher, _rtp(7, 9000, KEY_FRAME))
    scene.send(publisher, _rtp(8, 12000, P_FRAME))
    stats = scene.settle(lambda s: s["frames"] == 2)
    assert [f.rtp_timestamp for f in scene.frames] == [9000, 12000]
    assert (stats["garbage"], stats["foreign"], stats["datagrams"]) == (2, 0, 2)
    scene.input.request_keyframe()  # the PLI goes to the publisher, not to the stray sender
    assert [p.media_ssrc for p in _plis(publisher)] == [SSRC] and _plis(stray) == []


def test_a_hijacker_of_a_live_stream_is_counted_and_ignored(scene_factory):
    scene = scene_factory()
    publisher, hijacker = scene.sender(), scene.sender()
    scene.send(publisher, _rtp(1, 3000, KEY_FRAME))
    scene.settle(lambda s: s["frames"] == 1)
    scene.send(hijacker, _rtp(1, 3000, KEY_FRAME, ssrc=666))
    scene.send(hijacker, _rtp(2, 6000, P_FRAME))  # even with the publisher's SSRC
    scene.send(hijacker, _sr(SSRC), rtcp=True)  # RTCP is taken from the media's host only: same host here
    scene.send(publisher, _rtp(2, 6000, P_FRAME))
    stats = scene.settle(lambda s: s["frames"] == 2 and s["foreign"] == 2 and s["rtcp"] == 1)
    assert [f.rtp_timestamp for f in scene.frames] == [3000, 6000]
    assert stats["foreign"] == 2 and stats["source_changes"] == 0


def test_rtcp_from_another_host_than_the_medias_is_foreign(scene_factory):
    scene = scene_factory()
    publisher, elsewhere = scene.sender(), scene.sender("127.0.0.2")
    scene.send(publisher, _rtp(1, 3000, KEY_FRAME))
    scene.settle(lambda s: s["frames"] == 1)
    scene.send(elsewhere, _sr(SSRC), rtcp=True)
    stats = scene.settle(lambda s: s["foreign"] == 1)
    assert scene.reports == [] and stats["foreign"] == 1 and stats["rtcp"] == 0
    scene.send(publisher, _sr(SSRC), rtcp=True)
    assert scene.settle(lambda s: s["rtcp"] == 1)["rtcp"] == 1 and len(scene.reports) == 1


def test_only_the_offered_ssrc_takes_the_stream(scene_factory):
    scene = scene_factory(ssrc=SSRC)
    stray, publisher = scene.sender(), scene.sender()
    scene.send(stray, _rtp(1, 3000, KEY_FRAME, ssrc=2222))
    scene.settle(lambda s: s["foreign"] == 1)
    scene.send(publisher, _rtp(5, 9000, KEY_FRAME))
    stats = scene.settle(lambda s: s["frames"] == 1)
    assert [f.rtp_timestamp for f in scene.frames] == [9000] and stats["foreign"] == 1
    assert stats["source_changes"] == 0  # the stray sender was never followed


def test_a_restarted_publisher_is_followed_once_the_old_source_is_silent(scene_factory):
    silence = 0.3  # instead of RTP_SOURCE_SILENCE_S, so the test waits less
    scene = scene_factory(tuning=MediaTuning(sync_wait_for_sr_s=0.0, rtp_source_silence_s=silence))
    first, second = scene.sender(), scene.sender()
    scene.send(first, _rtp(1, 3000, KEY_FRAME))
    stopped = time.monotonic()
    scene.send(second, _rtp(900, 50_000, KEY_FRAME, ssrc=4444))  # while the first is live: foreign
    assert scene.settle(lambda s: s["foreign"] == 1)["frames"] == 1
    time.sleep(max(0.0, stopped + silence + 0.05 - time.monotonic()))
    scene.send(second, _rtp(901, 53_000, KEY_FRAME, ssrc=4444))
    scene.send(second, _rtp(902, 56_000, P_FRAME, ssrc=4444))
    scene.send(first, _rtp(2, 6000, P_FRAME))  # the old source, back: now the stranger
    stats = scene.settle(lambda s: s["frames"] == 3 and s["foreign"] == 2)
    assert len(scene.frames) == 3 and scene.frames[1].keyframe
    gap = scene.frames[1].rtp_timestamp - scene.frames[0].rtp_timestamp
    assert silence * 90000 <= gap <= (silence + 0.5) * 90000  # the timeline goes on by the time that passed
    assert scene.frames[2].rtp_timestamp - scene.frames[1].rtp_timestamp == 3000
    assert (stats["source_changes"], stats["ssrc_changes"], stats["foreign"]) == (1, 1, 2)
    scene.input.request_keyframe()
    assert [p.media_ssrc for p in _plis(second)] == [4444]


def test_a_pinned_stream_hears_its_announcers_host_only(scene_factory):
    scene = scene_factory(source_host="127.0.0.1")
    elsewhere, announcer = scene.sender("127.0.0.2"), scene.sender("127.0.0.1")
    scene.send(elsewhere, _rtp(1, 3000, KEY_FRAME))
    scene.send(elsewhere, _sr(SSRC), rtcp=True)
    stats = scene.settle(lambda s: s["foreign"] == 2)
    assert scene.frames == [] and scene.reports == [] and stats["foreign"] == 2
    scene.send(announcer, _rtp(2, 6000, KEY_FRAME))
    assert scene.settle(lambda s: s["frames"] == 1)["frames"] == 1


# SRTP: the publisher protects with its key, the node answers PLIs with its own
PUBLISHER_KEY, NODE_KEY = os.urandom(30), os.urandom(30)


def _protector(key: bytes) -> Session:
    return Session(Policy(key, Policy.SSRC_ANY_OUTBOUND))


def test_srtp_media_and_reports_are_decrypted_and_plis_encrypted_with_the_nodes_key(scene_factory):
    scene = scene_factory(srtp_suite="AES_CM_128_HMAC_SHA1_80", srtp_remote_key=PUBLISHER_KEY,
                          srtp_local_key=NODE_KEY)
    publisher, control = scene.sender(), scene.sender()
    protect = _protector(PUBLISHER_KEY)
    scene.send(control, protect.protect_rtcp(_sr(SSRC)), rtcp=True)
    first = protect.protect(_rtp(1, 3000, P_FRAME))
    scene.send(publisher, first)
    scene.send(publisher, first)  # a replay
    scene.send(publisher, _rtp(2, 6000, P_FRAME + bytes(20)))  # not protected: does not authenticate
    scene.send(publisher, _rtp(3, 9000, b""))  # too short for SRTP
    stats = scene.settle(lambda s: s["frames"] + s["srtp_auth_failures"] + s["srtp_replays"] + s["garbage"]
                         + s["rtcp"] == 5)
    assert [f.rtp_timestamp for f in scene.frames] == [3000] and scene.reports == [(V, 5 << 32, 2000)]
    assert (stats["srtp_auth_failures"], stats["srtp_replays"], stats["garbage"], stats["rtcp"]) == (1, 1, 1, 1)
    scene.input.request_keyframe()
    control.settimeout(1.0)
    srtcp = control.recv(2048)
    assert srtcp[8:12] != SSRC.to_bytes(4, "big")  # encrypted: the media SSRC is not readable
    clear = Session(Policy(NODE_KEY, Policy.SSRC_ANY_INBOUND)).unprotect_rtcp(srtcp)
    [pli] = RtcpPacket.parse(clear)
    assert isinstance(pli, RtcpPsfbPacket) and pli.fmt == RTCP_PSFB_PLI and pli.media_ssrc == SSRC


def test_an_srtp_sender_with_a_wrong_key_never_takes_the_stream(scene_factory):
    scene = scene_factory(srtp_suite="AES_CM_128_HMAC_SHA1_80", srtp_remote_key=PUBLISHER_KEY,
                          srtp_local_key=NODE_KEY)
    impostor, publisher = scene.sender(), scene.sender()
    wrong = _protector(os.urandom(30))
    for seq in range(5):
        scene.send(impostor, wrong.protect(_rtp(seq, 3000 * seq, KEY_FRAME)))
    stats = scene.settle(lambda s: s["srtp_auth_failures"] == 5)
    assert scene.frames == [] and stats["srtp_auth_failures"] == 5 and stats["datagrams"] == 0
    scene.send(publisher, _protector(PUBLISHER_KEY).protect(_rtp(9, 30000, KEY_FRAME)))
    assert scene.settle(lambda s: s["frames"] == 1)["frames"] == 1
