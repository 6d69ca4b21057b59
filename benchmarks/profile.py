"""Sample one worker with py-spy (`pip install py-spy`) and name its hot spots.

py-spy's raw output is one line per distinct stack, `frame;frame;...;leaf count`,
idle threads excluded; a function's *self* share is the share of busy samples in
which it is the innermost frame, its *total* share those in which it is anywhere
on the stack.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[1])
OUR_PACKAGES = {"engine", "workers", "storage_adapters"}


def py_spy_binary() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def _function(frame: str) -> tuple[str, bool]:
    """("name (file)", is it this repository's code). py-spy shortens file names to
    their path below sys.path (workers/jitter.py, asyncio/events.py)."""
    frame = frame.strip()
    match = re.match(r"^(.*) \(([^()]*?)(?::\d+)?\)$", frame)
    if not match:
        return frame, False
    name, path = match.groups()
    if path.startswith(REPO):
        path = path[len(REPO):].lstrip("/")
    ours = path.split("/", 1)[0] in OUR_PACKAGES
    return f"{name} ({path if ours else '/'.join(Path(path).parts[-2:])})", ours


def hot_spots(raw: str, top: int = 10) -> dict:
    """Self share of every function; total (inclusive) share of this repository's functions."""
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_function(f) for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        samples += n
        self_counts[frames[-1][0]] += n
        for name in {name for name, ours in frames if ours}:
            total_counts[name] += n
    share = lambda c: round(100.0 * c / samples, 1) if samples else 0.0  # noqa: E731
    # `entry`/`run` of the worker contain everything: leave out what is on (nearly) every stack
    inclusive = [(f, c) for f, c in total_counts.most_common() if c < 0.95 * samples]
    return {"samples": samples,
            "self": [{"function": f, "share_pct": share(c)} for f, c in self_counts.most_common(top)],
            "total": [{"function": f, "share_pct": share(c)} for f, c in inclusive[:top]]}


class PySpy:
    def __init__(self, pid: int, output: Path, seconds: float, preexec_fn=None, rate: int = 1000):
        self.pid, self.output, self.seconds, self.preexec_fn, self.rate = pid, output, seconds, preexec_fn, rate
        self.process: subprocess.Popen | None = None
        self.error = ""

    def start(self) -> None:
        binary = py_spy_binary()
        if binary is None:
            self.error = "py-spy is not installed (`.venv/bin/pip install py-spy`)"
            return
        self.log = open(self.output.with_suffix(".log"), "wb")
        self.process = subprocess.Popen(
            [binary, "record", "--pid", str(self.pid), "--duration", str(int(self.seconds)), "--rate",
             str(self.rate), "--format", "raw", "--nonblocking", "--output", str(self.output)],
            stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=self.preexec_fn)

    def finish(self) -> dict:
        if self.process is None:
            return {"error": self.error}
        try:
            self.process.wait(self.seconds + 30)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            self.process.wait()
        self.log.close()
        if not self.output.exists():
            log = self.output.with_suffix(".log").read_text(errors="replace")[-500:]
            return {"error": f"py-spy wrote nothing: {log}"}
        self.output.with_suffix(".log").unlink(missing_ok=True)
        return {"pid": self.pid, "seconds": self.seconds, "rate": self.rate, "raw": str(self.output),
                **hot_spots(self.output.read_text(errors="replace"))}
