"""A small run of the benchmark harness (benchmarks/run.py), so that it cannot rot:
2 plain-RTP streams for a few seconds on node disk, no FFmpeg."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_harness(*args: str, timeout: float = 100) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks.run", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_a_small_benchmark_run_measures_everything(tmp_path):
    done = run_harness("--streams", "2", "--seconds", "4", "--storage", "disk", "--size", "640x360",
                       "--sample-interval", "1", "--out", str(tmp_path), "--name", "smoke")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "cpu" in done.stdout and "streams 2" in done.stdout  # progress lines
    result = json.loads((tmp_path / "smoke.json").read_text())
    assert result["kind"] == "streams" and result["machine"]["nproc"] >= 1
    [level] = result["levels"]
    assert level["n"] == 2 and level["window_s"] >= 3.5
    assert level["cpu"]["per_stream_pct"] > 0 and level["cpu"]["workers_pct"] > 0
    memory = level["memory"]
    assert len(memory["per_worker"]) == 2
    assert all(w["uss_mb"] > 0 and w["pss_mb"] >= w["uss_mb"] for w in memory["per_worker"])
    assert level["defects"] == {"streams_with_defects": 0, "count": 0, "details": {}}, level["defects"]
    assert level["first_frame_s"]["n"] == 2 and 0 < level["first_frame_s"]["p95"] < 5
    assert level["stop_to_durable_s"]["long"]["n"] == 2 and level["stop_to_durable_s"]["short"]["n"] == 2
    for stream in level["streams"]:
        assert stream["file"]["video_frames"] == stream["sent"]["video"]["frames"] > 0
    assert len(level["samples"]) >= 3
    assert result["limit"] == {"largest_clean_n": 2, "first_defective_n": None}
    summary = (tmp_path / "summary.md").read_text()
    assert "| smoke | 2 |" in summary


def test_whip_publishers_are_refused_clearly_until_they_exist(tmp_path):
    done = run_harness("--publisher", "whip", "--streams", "1", "--out", str(tmp_path), timeout=30)
    assert done.returncode != 0
    assert "--publisher whip is not implemented yet" in done.stderr
    assert not list(tmp_path.iterdir())
