"""The README's walkthrough, run from the README's own text: its ```sh blocks in
order, the one that starts the node in the background, the rest as one bash
script (they share shell variables), in a scratch directory that has the
repository's .venv, .ci and examples. The only change made to the commands: the
node's port 8080 becomes a free one (through RECNODE_PORT, which `serve`, `sign`
and `publish` all read, and in the URLs written out). Also `recnode --version`
and the help of every `serve` option."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from engine import options
from testkit.node import http
from testkit.ports import free_port, free_udp_range

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def walkthrough_blocks(readme: str) -> list[str]:
    section = readme.split("\n## Walkthrough\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)


def test_the_walkthrough_runs_as_written(tmp_path):
    if shutil.which("ffmpeg") is None:
        pytest.skip("the walkthrough's FFmpeg publisher needs ffmpeg on PATH")
    blocks = walkthrough_blocks(README.read_text())
    [serve] = [b for b in blocks if "recnode serve" in b]
    script = "\n".join(b for b in blocks if b is not serve)
    port = free_port()
    low, high = free_udp_range()
    for name in (".venv", ".ci", "examples"):
        (tmp_path / name).symlink_to(REPO / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECNODE_")}
    env.update(RECNODE_PORT=str(port), RECNODE_RTP_PORTS=f"{low}-{high}", RECNODE_CPU_CAP="100")

    def bash(text: str, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(["bash", "-euo", "pipefail", "-c", text.replace("127.0.0.1:8080", f"127.0.0.1:{port}")],
                                cwd=tmp_path, env=env, start_new_session=True, **kwargs)

    log = open(tmp_path / "node.log", "wb")
    node = bash(serve, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not _ready(port):
            assert node.poll() is None and time.monotonic() < deadline, (tmp_path / "node.log").read_text()[-3000:]
            time.sleep(0.2)
        walk = bash(script, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            output = walk.communicate(timeout=120)[0].decode()
        finally:
            _end(walk)
        assert walk.returncode == 0, output
    finally:
        _end(node)
        log.close()
    assert re.search(r"^task [A-Za-z0-9]{16}$", output, re.MULTILINE), output
    assert f"http://127.0.0.1:{port}/recordings/recordings/rec/" in output and "Signature=" in output
    assert "#EXTM3U" in output and '"Code": 0' in output
    assert output.rstrip().endswith("#EXT-X-ENDLIST"), output
    playlists = sorted((tmp_path / "recnode-data" / "storage" / "recordings" / "rec").glob("*.m3u8"))
    assert sorted(p.name.split("_")[3] for p in playlists) == ["stream1", "stream2"]  # the pattern, FFmpeg's
    for playlist in playlists:
        with av.open(str(playlist)) as container:
            assert sum(1 for _ in container.decode(video=0)) >= 30, playlist


def _ready(port: int) -> bool:
    try:
        return http("GET", f"http://127.0.0.1:{port}/readyz", timeout=1).status == 200
    except OSError:
        return False


def _end(process: subprocess.Popen) -> None:
    """SIGTERM to the process's whole group (background publishers too), then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(15)
            return
        except subprocess.TimeoutExpired:
            continue


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECNODE_")}
    env["COLUMNS"] = "10000"  # argparse wraps help at the terminal's width, splitting long defaults
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)


def test_version_names_the_installed_package():
    from importlib.metadata import version

    done = _run("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"recnode {version('recnode')}"


def test_every_serve_option_has_help_naming_its_variable_and_default():
    done = _run("serve", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for option in options.SERVE_OPTIONS:
        match = re.search(re.escape(option.flag) + r"(?: VALUE)? (.*?)\(env " + re.escape(option.env)
                          + r"; default: (.*?)\)(?= --|$)", text)
        assert match, option.flag
        assert match.group(1).strip(), f"{option.flag} has no help text"
        assert match.group(2) == option.default_text.strip(), option.flag
