"""Real RTSP servers from Debian's packages, each in its own process:

- GStreamer's RTSP server (``start_gst_server``): every client gets the clip from its
  start over TCP (interleaved) or UDP, paced in real time; at the clip's end the session
  ends. Any launch line: a file (``file_launch``), or test sources (G.711, MJPEG).
- rtsp-server-perl (``start_relay``): a relay that passes on to its clients what FFmpeg
  pushes to it (``ffmpeg -re -f rtsp``, looping the file); UDP only (it refuses
  TCP-interleaved SETUP).

`.ci/install-media-tools` installs them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

from testkit.ports import free_port
from testkit.process import wait_ready

GST_SERVER = Path(__file__).with_name("gst_server.py")
SYSTEM_PYTHON = "/usr/bin/python3"  # has python3-gi; the project's venv has no GObject bindings


def gst_available() -> bool:
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
                            "from gi.repository import GstRtspServer"], capture_output=True)
    return probe.returncode == 0


def relay_available() -> bool:
    return shutil.which("rtsp-server-perl") is not None and shutil.which("ffmpeg") is not None


def file_launch(path: Path, video: str = "h264", audio: bool = True) -> str:
    """A GStreamer launch line serving an MPEG-TS file's video (h264 / h265) and AAC audio."""
    launch = f"( filesrc location={path} ! tsdemux name=d d. ! queue ! {video}parse " \
             f"config-interval=-1 ! rtp{video}pay name=pay0 pt=96"
    if audio:
        launch += " d. ! queue ! aacparse ! rtpmp4gpay name=pay1 pt=97"
    return launch + " )"


def start_gst_server(port: int, launch: str, path: str = "/cam", protocols: str = "both") -> subprocess.Popen:
    spec = {"port": port, "path": path, "launch": launch, "protocols": protocols}
    process = subprocess.Popen([SYSTEM_PYTHON, str(GST_SERVER), json.dumps(spec)], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
    wait_ready(process, "GStreamer's RTSP server", 30)
    return process


def start_relay(clip: Path, client_port: int, path: str = "/cam") -> list[subprocess.Popen]:
    """rtsp-server-perl on `client_port` and an FFmpeg pushing `clip` to it, looping; returns
    both processes once the stream can be pulled from rtsp://127.0.0.1:<client_port><path>."""
    pushed = clip.with_suffix(".mkv")  # FFmpeg's RTSP muxer wants AAC with its config, not ADTS
    if not pushed.exists():
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(clip), "-c", "copy", str(pushed)], check=True)
    source_port = free_port()
    relay = subprocess.Popen(["rtsp-server-perl", "-c", str(client_port), "-s", str(source_port),
                              "--client_listen_address", "127.0.0.1", "--source_listen_address", "127.0.0.1",
                              "--rtp_start_port", str(free_port())],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    processes = [relay]
    deadline = time.monotonic() + 10
    while True:
        pusher = subprocess.Popen(["ffmpeg", "-nostdin", "-v", "error", "-re", "-stream_loop", "-1", "-i", str(pushed),
                                   "-c", "copy", "-f", "rtsp", f"rtsp://127.0.0.1:{source_port}{path}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        if pusher.poll() is None:  # the relay took the push
            return processes + [pusher]
        if time.monotonic() > deadline:
            relay.kill()
            raise RuntimeError("FFmpeg could not push to rtsp-server-perl")
