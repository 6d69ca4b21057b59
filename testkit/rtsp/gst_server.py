"""GStreamer's RTSP server (Debian: gir1.2-gst-rtsp-server-1.0, python3-gi), for tests.

Run by the system Python, which has the GObject bindings (the project's venv does not):
``/usr/bin/python3 gst_server.py SPEC_JSON``, SPEC = {"port", "path", "launch",
"protocols": "tcp" | "udp" | "both"}. Every client gets its own pipeline from the
start (not shared), paced in real time by the server. Prints "ready" once it listens.
Only the standard library and gi here: this file is not imported by the test kit.
"""

import json
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

PROTOCOLS = {"tcp": GstRtsp.RTSPLowerTrans.TCP, "udp": GstRtsp.RTSPLowerTrans.UDP,
             "both": GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP}


def main() -> None:
    spec = json.loads(sys.argv[1])
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(spec["port"]))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(spec["launch"])
    factory.set_shared(False)
    factory.set_protocols(PROTOCOLS[spec.get("protocols", "both")])
    server.get_mount_points().add_factory(spec["path"], factory)
    if server.attach(None) == 0:
        print("cannot listen", flush=True)
        sys.exit(1)
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    print("ready", flush=True)
    loop.run()


main()
