"""RTSP servers for tests, each a real server in its own process (``testkit.rtsp.servers``),
and the clips they serve (``testkit.rtsp.clips``)."""
