"""A WHEP server (draft-ietf-wish-whep) for tests: each POSTed offer gets its own aiortc
peer connection that sends the test clip (``testkit.media.make_test_media``) from its
first frame, looping, paced in real time, WITHOUT re-encoding: the clip's H.264 access
units and Opus packets are handed to aiortc as ``av.Packet`` s, which its senders only
packetize. Sender Reports pair each packet's RTP time with the time it left, so they
are true as long as it leaves on time.

It runs in its own process (``python -m testkit.whep SPEC_JSON``, ``start_server``) so a
test can kill it (SIGKILL: no DELETE, no BYE) and start it again on the same port, and
it keeps a JSON record of what it was asked (``ServerRecord``) for the test to read.
Options: a bearer token it requires, a 307 to another URL instead of answering, an
answer that is not SDP, no audio or no video.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import aioice.ice
import av
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from testkit.media import TestMedia, make_test_media
from testkit.process import start_module, wait_ready
from testkit.whip.aiortc_publisher import _Pacer, _report_capture_time

GARBAGE_ANSWER = "this is not an SDP answer\r\n"


@dataclass
class ServerSpec:
    port: int
    record: str  # where the ServerRecord JSON is kept
    path: str = "/whep/cam"
    clip_s: float = 4.0  # the clip's length; it loops
    token: str = ""  # required as "Authorization: Bearer <token>" when set
    redirect_to: str = ""  # answer every POST with 307 to this URL
    garbage_answer: bool = False  # 201 with a body that is not SDP
    audio: bool = True
    video: bool = True


@dataclass
class ServerRecord:
    posts: int = 0
    sessions: int = 0  # offers answered
    deletes: list[str] = field(default_factory=list)  # resource paths DELETEd
    authorization: list[str] = field(default_factory=list)  # the header of every request
    pid: int = 0


def read_record(path: str | os.PathLike) -> ServerRecord:
    try:
        return ServerRecord(**json.loads(Path(path).read_text()))
    except FileNotFoundError:
        return ServerRecord()


class _ClipTrack(MediaStreamTrack):
    """The clip's encoded frames of one kind, as packets with their capture time as pts."""

    def __init__(self, kind: str, media: TestMedia, pacer: _Pacer):
        super().__init__()
        self.kind = kind
        self._pacer = pacer
        if kind == "video":
            self._items = [(au.time_s, au.data) for au in media.video]
            self.rate = 90000
        else:
            # One loop is exactly the clip's length (the encoder's last, flushing packet is left out).
            self._items = [(p.time_s, p.data) for p in media.audio[:round(media.duration_s * 48000) // 960]]
            self.rate = 48000
        self._period = media.duration_s
        self._index = 0

    async def recv(self) -> av.Packet:
        loop, position = divmod(self._index, len(self._items))
        self._index += 1
        time_s, data = self._items[position]
        time_s += loop * self._period
        await self._pacer.wait(self.kind, max(0.0, time_s))
        packet = av.Packet(data)
        packet.pts = round(time_s * self.rate)
        packet.time_base = Fraction(1, self.rate)
        return packet


class WhepServer:
    def __init__(self, spec: ServerSpec):
        self.spec = spec
        self.record = ServerRecord(pid=os.getpid())
        self.media = make_test_media(duration_s=spec.clip_s)
        self.sessions: dict[str, RTCPeerConnection] = {}
        self._save()

    def _save(self) -> None:
        temporary = f"{self.spec.record}.tmp"
        Path(temporary).write_text(json.dumps(asdict(self.record)))
        os.replace(temporary, self.spec.record)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(self.spec.path, self._post)
        app.router.add_delete(self.spec.path + "/session/{id}", self._delete)
        return app

    def _authorized(self, request: web.Request) -> bool:
        self.record.authorization.append(request.headers.get("Authorization", ""))
        return not self.spec.token or request.headers.get("Authorization") == f"Bearer {self.spec.token}"

    async def _post(self, request: web.Request) -> web.Response:
        self.record.posts += 1
        try:
            if not self._authorized(request):
                return web.Response(status=401, text="bearer token required\n")
            if self.spec.redirect_to:
                return web.Response(status=307, headers={"Location": self.spec.redirect_to})
            offer = await request.text()
            if self.spec.garbage_answer:
                return web.Response(status=201, text=GARBAGE_ANSWER, content_type="application/sdp",
                                    headers={"Location": f"{self.spec.path}/session/garbage"})
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pacer = _Pacer()
            for kind, wanted in (("video", self.spec.video), ("audio", self.spec.audio)):
                if wanted:
                    track = _ClipTrack(kind, self.media, pacer)
                    # Sender Reports of capture time, as a camera's or a browser's: lip-sync checks
                    # measure the node, not when this busy process got its packets out
                    _report_capture_time(pc.addTrack(track), pacer, track.rate)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            session_id = str(self.record.sessions)
            self.record.sessions += 1
            self.sessions[session_id] = pc
            return web.Response(status=201, text=pc.localDescription.sdp, content_type="application/sdp",
                                headers={"Location": f"{self.spec.path}/session/{session_id}"})
        finally:
            self._save()

    async def _delete(self, request: web.Request) -> web.Response:
        try:
            self._authorized(request)
            self.record.deletes.append(request.path)
            pc = self.sessions.pop(request.match_info["id"], None)
            if pc is None:
                return web.Response(status=404)
            await pc.close()
            return web.Response(status=200)
        finally:
            self._save()


async def _serve(spec: ServerSpec) -> None:
    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: ["127.0.0.1"]
    server = WhepServer(spec)
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", spec.port).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    for pc in server.sessions.values():
        await pc.close()
    await runner.cleanup()


def start_server(spec: ServerSpec, timeout_s: float = 60) -> subprocess.Popen:
    """``python -m testkit.whep <spec-json>``, returned once it listens."""
    process = start_module("testkit.whep", json.dumps(asdict(spec)), stdout=subprocess.PIPE)
    wait_ready(process, "the WHEP server", timeout_s)
    return process


def main(argv: list[str] | None = None) -> int:
    spec = ServerSpec(**json.loads((sys.argv[1:] if argv is None else argv)[0]))
    asyncio.run(_serve(spec))
    return 0
