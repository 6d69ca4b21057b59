"""The image cannot be built here (no Docker engine), so its install step runs the
same way in a fresh venv, from a build context made of exactly what the
Dockerfile copies, and the installed `recnode` must serve.

That install downloads recnode's dependencies from the package index (PyPI, or the
one pip is configured with), as `docker build` would: the test needs access to it."""

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testkit.node import http
from testkit.ports import free_port

REPO = Path(__file__).resolve().parents[1]


def dockerfile_steps() -> tuple[list[tuple[str, str]], list[str], dict[str, str]]:
    copies, runs, env = [], [], {}
    lines = (REPO / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    for line in lines:
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words[0] == "COPY":
            *sources, dest = words[1:]
            copies += [(s, dest) for s in sources]
        elif words[0] == "RUN" and "pip install" in line:
            runs.append(line.split("RUN", 1)[1].strip())
        elif words[0] == "ENV":
            env.update(w.split("=", 1) for w in words[1:])
    return copies, runs, env


def test_dockerfile_is_what_the_test_assumes():
    copies, runs, env = dockerfile_steps()
    assert runs == ["pip install --no-cache-dir ."]
    assert {s for s, _ in copies} >= {"pyproject.toml", "engine", "workers", "storage_adapters", "testkit"}  # demo
    text = (REPO / "Dockerfile").read_text()
    assert "FROM python:3.12-slim" in text and "USER recnode" in text and 'CMD ["serve"]' in text


@pytest.mark.timeout(600)
def test_install_step_in_a_fresh_venv_gives_a_working_recnode(tmp_path):
    copies, runs, env = dockerfile_steps()
    context = tmp_path / "app"
    context.mkdir()
    for source, dest in copies:
        target = context / (dest if dest not in ("./", ".") else source)
        if (REPO / source).is_dir():
            shutil.copytree(REPO / source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / source, target)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    for command in runs:
        args = shlex.split(command)
        assert args[:2] == ["pip", "install"]
        installed = subprocess.run([str(venv / "bin" / "python"), "-m", *args], cwd=context,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert installed.returncode == 0, (
            f"the Dockerfile's `{command}` failed in a fresh venv. It downloads recnode's dependencies from the "
            f"package index pip is configured with (PyPI unless PIP_INDEX_URL or pip.conf say otherwise), so this "
            f"test needs access to it. pip said:\n{installed.stderr[-3000:]}")
    recnode = venv / "bin" / "recnode"
    assert subprocess.run([str(recnode), "--help"], capture_output=True, check=True).stdout.startswith(b"usage")
    demo = subprocess.run([str(recnode), "demo"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert demo.returncode == 0 and "files are in" in demo.stdout, demo.stdout + demo.stderr  # testkit is installed

    port = free_port()
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("RECNODE_")}
    run_env.update(env)
    run_env.update({"RECNODE_HOST": "127.0.0.1", "RECNODE_PORT": str(port),
                    "RECNODE_DATA_DIR": str(tmp_path / "data"), "RECNODE_RTP_PORTS": "41000-41099"})
    process = subprocess.Popen([str(recnode), "serve"], cwd=tmp_path, env=run_env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "recnode serve exited"
            try:
                if http("GET", f"http://127.0.0.1:{port}/readyz", timeout=1).status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "recnode serve never became ready"
            time.sleep(0.2)
        secret_file = tmp_path / "data" / "server-secret"
        assert oct(secret_file.stat().st_mode & 0o777) == "0o600"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
