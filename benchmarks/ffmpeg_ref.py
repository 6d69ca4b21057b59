"""The reference: the FFmpeg command line remuxing the same plain-RTP stream into
fragmented MP4, one ffmpeg process per stream, fed by a twin publisher."""

from __future__ import annotations

import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from testkit.rtp import PublisherSpec, offer_sdp

INSTALL_HINT = "install Debian's FFmpeg with `apt-get install -y ffmpeg` (or run without --ffmpeg)"


def ffmpeg_binary() -> str | None:
    return shutil.which("ffmpeg")


def ffmpeg_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "-version"], capture_output=True, text=True, timeout=10).stdout
        return out.splitlines()[0] if out else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def require_ffmpeg() -> str:
    binary = ffmpeg_binary()
    if binary is None:
        raise SystemExit(f"--ffmpeg: no ffmpeg on PATH; {INSTALL_HINT}")
    return binary


def receiver_sdp(spec: PublisherSpec, host: str, video_port: int, audio_port: int) -> str:
    """The publisher's own offer with the ports FFmpeg listens on (RTCP on port + 1)."""
    sdp = offer_sdp(spec, True, True)
    sdp = sdp.replace("c=IN IP4 127.0.0.1", f"c=IN IP4 {host}")
    sdp = sdp.replace("m=video 9 ", f"m=video {video_port} ").replace("m=audio 9 ", f"m=audio {audio_port} ")
    return sdp


@dataclass
class FfmpegRemux:
    """`ffmpeg -i stream.sdp -c copy` into fragmented MP4, as in the issue."""

    binary: str
    workdir: Path
    name: str
    video_port: int
    audio_port: int
    process: subprocess.Popen | None = None

    @property
    def output(self) -> Path:
        return self.workdir / f"{self.name}.mp4"

    def command(self, sdp_path: Path) -> list[str]:
        return [self.binary, "-hide_banner", "-nostdin", "-loglevel", "warning", "-y",
                "-protocol_whitelist", "file,udp,rtp", "-i", str(sdp_path),
                "-c", "copy", "-f", "mp4", "-movflags", "frag_keyframe+empty_moov+default_base_moof",
                str(self.output)]

    def start(self, spec: PublisherSpec, host: str, preexec_fn=None) -> None:
        sdp_path = self.workdir / f"{self.name}.sdp"
        sdp_path.write_text(receiver_sdp(spec, host, self.video_port, self.audio_port))
        self.log = open(self.workdir / f"{self.name}.log", "wb")
        self.process = subprocess.Popen(self.command(sdp_path), stdin=subprocess.DEVNULL, stdout=self.log,
                                        stderr=subprocess.STDOUT, preexec_fn=preexec_fn)

    def stop(self, timeout: float = 20) -> int | None:
        """SIGINT: ffmpeg finishes the file (last fragment, trailer) and exits."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return (self.workdir / f"{self.name}.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""
