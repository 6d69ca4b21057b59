import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_demo_records_every_format_and_prints_the_table():
    done = subprocess.run([sys.executable, "-m", "engine.cli", "demo"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.split()[1:2] == ["StreamType"]]
    assert len(rows) == 15
    assert sum("h264+opus" in r for r in rows) == 1 and sum("h264+aac" in r for r in rows) == 2
    assert all("video" in r or "audio" in r for r in rows)
    assert "files are in" in done.stdout
