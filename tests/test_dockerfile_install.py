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


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions in order: (INSTRUCTION, the rest of its line)."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0], line.split(None, 1)[1]) for line in lines]


def dockerfile_steps() -> tuple[list[tuple[str, str]], list[str], dict[str, str]]:
    copies, runs, env = [], [], {}
    for instruction, rest in instructions():
        words = shlex.split(rest)
        if instruction == "COPY":
            *sources, dest = words
            copies += [(s, dest) for s in sources]
        elif instruction == "RUN" and "pip install" in rest:
            runs.append(rest)
        elif instruction == "ENV":
            env.update(w.split("=", 1) for w in words)
    return copies, runs, env


def test_dockerfile_is_what_the_test_assumes():
    copies, runs, env = dockerfile_steps()
    assert len(runs) == 2 and runs[1] == "pip install --no-cache-dir --no-deps ."
    assert {s for s, _ in copies} >= {"pyproject.toml", "engine", "workers", "storage_adapters", "testkit"}  # demo
    text = (REPO / "Dockerfile").read_text()
    assert "FROM python:3.12-slim" in text and "USER recnode" in text and 'CMD ["serve"]' in text


def test_dependencies_are_a_layer_of_their_own():
    """Only pyproject.toml is copied before the dependencies are installed, so a
    change to the code (or the README) rebuilds the layers after them only."""
    steps = instructions()
    first_install = next(i for i, (name, rest) in enumerate(steps) if name == "RUN" and "pip install" in rest)
    copied_before = [shlex.split(rest)[:-1] for name, rest in steps[:first_install] if name in ("COPY", "ADD")]
    assert copied_before == [["pyproject.toml"]]
    later = [rest for name, rest in steps[first_install + 1:] if name == "RUN" and "pip install" in rest]
    assert all("--no-deps" in rest for rest in later)


def test_the_image_publishes_its_media_ports_and_waits_for_a_start():
    _, _, env = dockerfile_steps()
    exposed = {word for name, rest in instructions() if name == "EXPOSE" for word in rest.split()}
    assert {"8080/tcp", f"{env['RECNODE_RTP_PORTS']}/udp", f"{env['RECNODE_WEBRTC_PORTS']}/udp"} <= exposed
    [healthcheck] = [rest for name, rest in instructions() if name == "HEALTHCHECK"]
    assert "--start-period=" in healthcheck and "/readyz" in healthcheck


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
    path = f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"  # `python` and `pip` are the fresh venv's
    for command in runs:
        installed = subprocess.run(["bash", "-c", command], cwd=context, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True,
                                   env={**os.environ, "PATH": path, "VIRTUAL_ENV": str(venv)})
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
