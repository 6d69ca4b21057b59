"""Starting the kit's own publisher processes: ``python -m testkit...`` from any
working directory, whether testkit runs from a checkout or is installed."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the folder testkit is imported from


def child_env() -> dict[str, str]:
    """This environment, with testkit importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
    return env


def start_module(module: str, *args: str, **popen_kwargs) -> subprocess.Popen:
    """``python -m module args...`` in a child process."""
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=str(PACKAGE_ROOT), env=child_env(),
                            **popen_kwargs)


def wait_ready(process: subprocess.Popen, what: str, timeout_s: float = 60) -> None:
    """Until a server process started with ``stdout=PIPE`` prints "ready"; killed (and a
    RuntimeError naming `what`) when it prints anything else, exits or takes too long."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout_s)
    line = process.stdout.readline() if ready else b""
    if line.strip() != b"ready":
        process.kill()
        process.wait()
        raise RuntimeError(f"{what} did not start: {line!r}")


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """In a child (a preexec_fn): get `signum` when the thread that started it dies (the
    test session's main thread, normally), so no server outlives a killed test run (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signum)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
