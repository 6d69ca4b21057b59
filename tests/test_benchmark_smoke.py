"""Small runs of the benchmark harness (benchmarks/run.py), so that it cannot rot:
plain-RTP and WHIP streams for a few seconds on node disk, no FFmpeg.

One run at a time: a run pins its recorder to one core and its publishers to another,
as the benchmarks do, and two runs at once would share them (and find defects that
are the other run's load)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMON = ("--seconds", "4", "--storage", "disk", "--size", "640x360", "--sample-interval", "1")
RUNS = {"rtp": ("--publisher", "rtp", "--streams", "2"), "whip": ("--publisher", "whip", "--streams", "1"),
        "whip-swarm": ("--publisher", "whip-swarm", "--streams", "2"),
        "ffmpeg-rtp": ("--publisher", "ffmpeg-rtp", "--streams", "2")}


def run_harness(out: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks.run", *args, "--out", str(out), "--name", "smoke"],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)


def finished_level(out: Path, kind: str, n: int) -> tuple[dict, dict, str]:
    """Run the harness on `kind`: (the run's results, its one level, its stdout), once it ended well."""
    done = run_harness(out, *RUNS[kind], *COMMON)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "cpu" in done.stdout and f"streams {n}" in done.stdout  # progress lines
    result = json.loads((out / "smoke.json").read_text())
    assert result["kind"] == "streams" and result["machine"]["nproc"] >= 1
    [level] = result["levels"]
    assert level["n"] == n and level["window_s"] >= 3.5
    assert level["cpu"]["per_stream_pct"] > 0 and level["cpu"]["workers_pct"] > 0
    memory = level["memory"]
    assert len(memory["per_worker"]) == n
    assert all(w["uss_mb"] > 0 and w["pss_mb"] >= w["uss_mb"] for w in memory["per_worker"])
    assert level["defects"] == {"streams_with_defects": 0, "count": 0, "details": {}}, level["defects"]
    assert level["first_frame_s"]["n"] == n and 0 < level["first_frame_s"]["p95"] < 5
    assert level["stop_to_durable_s"]["long"]["n"] == n and level["stop_to_durable_s"]["short"]["n"] == n
    for stream in level["streams"]:
        assert stream["file"]["video_frames"] == stream["sent"]["video"]["frames"] > 0
        assert stream["file"]["audio_frames"] == stream["sent"]["audio"]["frames_from_video_start"] > 0
        assert stream["worker_pid"] in {w["pid"] for w in memory["per_worker"]}
    assert len(level["samples"]) >= 3
    assert result["limit"] == {"largest_clean_n": n, "first_defective_n": None}
    summary = (out / "summary.md").read_text()
    assert f"| smoke | {n} |" in summary
    return result, level, done.stdout


def test_a_small_plain_rtp_run_measures_everything(tmp_path):
    result, level, _ = finished_level(tmp_path, "rtp", 2)
    assert result["config"]["publisher"] == "rtp"
    for stream in level["streams"]:
        for kind in ("video", "audio"):
            assert stream["received"][kind]["datagrams"] >= stream["sent"][kind]["packets"] > 0


def test_a_small_whip_run_measures_everything(tmp_path):
    result, level, stdout = finished_level(tmp_path, "whip", 1)
    assert result["config"]["publisher"] == "whip" and "stereo" in result["config"]["audio"]
    assert "[whip-disk N=1]" in stdout
    [stream] = level["streams"]
    for kind in ("video", "audio"):
        received, sent = stream["received"][kind], stream["sent"][kind]
        assert received["frames"] == sent["frames"] > 0 and received["lost"] == 0
        assert received["packets"] >= received["frames"]
    assert stream["publisher_lateness_s"]["max"] >= 0  # measured (its bound is a warning about the load generator)


def test_a_small_whip_swarm_run_measures_everything(tmp_path):
    """The fast WHIP publisher: both streams from ONE publisher process, recorded whole."""
    result, level, _ = finished_level(tmp_path, "whip-swarm", 2)
    assert result["config"]["publisher"] == "whip-swarm"
    for stream in level["streams"]:
        for kind in ("video", "audio"):
            received, sent = stream["received"][kind], stream["sent"][kind]
            assert received["frames"] == sent["frames"] > 0 and received["lost"] == 0
    assert level["publishers_cpu_pct"] > 0 and level["publishers_cpu_pct_per_stream"] > 0


def test_a_small_ffmpeg_rtp_run_measures_everything(tmp_path):
    """Plain RTP sent by Debian's ffmpeg (not our sender), recorded whole."""
    result, level, _ = finished_level(tmp_path, "ffmpeg-rtp", 2)
    assert result["config"]["publisher"] == "ffmpeg-rtp"
    for stream in level["streams"]:
        for kind in ("video", "audio"):
            assert stream["received"][kind]["frames"] >= stream["sent"][kind]["frames"] > 0
            assert stream["received"][kind]["jitter_lost_packets"] == 0
