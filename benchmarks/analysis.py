"""After a level: decode every file, compare it with what its publisher sent, name
the defects, and sum the level up.

A publisher kind hands over what it sent as *records* (frame index, capture time,
time.monotonic() when sent), one per RTP packet or one per frame, whichever it knows
(`sent_summary`), and says which of its stream's counters must match them
(`publishers.Counters`); everything else here is the same for every kind.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.config import MAIN_FOLDER, MAX_DISK_LAG_S, MAX_PUBLISHER_LATENESS_S, MAX_RELEASE_DELAY_S, Storage
from benchmarks.percentiles import distribution
from benchmarks.procs import Pinning

KINDS = ("video", "audio")
SentRecord = tuple[int, float, float | None]  # (frame index, capture time s, time.monotonic() when sent)


def sent_summary(records: dict[str, list[SentRecord]], t0_mono: float, completed: bool) -> dict:
    """What a publisher sent (per track: frames, first and last capture time), and how
    punctual it was (lateness: sent - due, due = t0_mono + capture time)."""
    out: dict[str, Any] = {"completed": completed}
    lateness = []
    for kind in KINDS:
        mine = records.get(kind, [])
        captures = sorted({capture for _, capture, _ in mine})
        out[kind] = {"frames": len({index for index, _, _ in mine}),
                     "first_capture_s": captures[0] if captures else None,
                     "last_capture_s": captures[-1] if captures else None}
        lateness += [sent - (t0_mono + capture) for _, capture, sent in mine if sent]
    # the file starts on the first key frame: Opus captured before it is left out by design
    video_start = out["video"]["first_capture_s"] or 0.0
    out["audio"]["frames_from_video_start"] = len({index for index, capture, _ in records.get("audio", [])
                                                   if capture >= video_start - 1e-9})
    out["lateness"] = distribution(lateness)
    return out


def summarize_file(path: str) -> dict:
    from testkit.probe import decode_all

    report = decode_all(path)
    pts = report.video_pts_s
    steps = [b - a for a, b in zip(pts, pts[1:])]
    return {"path": path, "video_frames": report.video_frames, "audio_frames": report.audio_frames,
            "video_first_s": report.video_first_s, "video_last_s": report.video_last_s,
            "max_video_step_s": round(max(steps), 4) if steps else None,
            "errors": list(report.errors[:5]), "bytes": os.path.getsize(path)}


def decode_files(streams: list, storage: Storage, node, files_dir: Path, pinning: Pinning) -> list[tuple]:
    """(stream, reports of its node files, report of its FFmpeg file or None) per stream,
    decoded in a process pool on every core (the node is gone by now)."""
    jobs: list[tuple[Any, str, str]] = []  # (stream, role, path)
    for s in streams:
        for entry in s.main_durable["files"]:
            jobs.append((s, "node", str(storage.fetch(node, MAIN_FOLDER + entry["FileId"], files_dir))))
        if s.ff is not None:
            jobs.append((s, "ffmpeg", str(s.ff.output)))
    all_cpus = set(range(os.cpu_count() or 1))
    os.sched_setaffinity(0, all_cpus)
    try:
        with ProcessPoolExecutor(max(1, len(all_cpus))) as pool:
            reports = list(pool.map(summarize_file, [path for _, _, path in jobs]))
    finally:
        pinning.as_load()
    out = []
    for s in streams:
        mine = [r for (owner, role, _), r in zip(jobs, reports) if owner is s and role == "node"]
        ff = [r for (owner, role, _), r in zip(jobs, reports) if owner is s and role == "ffmpeg"]
        out.append((s, mine, ff[0] if ff else None))
    return out


def received_defects(tracks: dict, sent: dict, counters) -> list[str]:
    """The stream's own counters (GET on its Location) against what was sent."""
    defects = []
    for kind in KINDS:
        t = tracks.get(kind, {})
        for key, sent_key, what in counters.received:
            if t.get(key, 0) < sent[kind][sent_key]:
                defects.append(f"{kind}: {t.get(key, 0)} of {sent[kind][sent_key]} {what} received")
        if t.get(counters.lost, 0):
            defects.append(f"{kind}: {t[counters.lost]} packets lost")
        if t.get("max_release_delay_s", 0) > MAX_RELEASE_DELAY_S:
            defects.append(f"{kind}: frames waited up to {t['max_release_delay_s']} s (worker behind)")
    return defects


def file_defects(report: dict, sent: dict, fps: int) -> list[str]:
    """The decoded file against what was sent: every frame, no gap, no early end."""
    defects = []
    video_sent, audio_sent = sent["video"]["frames"], sent["audio"]["frames_from_video_start"]
    if report["video_frames"] != video_sent:
        defects.append(f"video frames {report['video_frames']} of {video_sent} sent")
    if report["audio_frames"] != audio_sent:
        defects.append(f"audio frames {report['audio_frames']} of {audio_sent} sent")
    if report["errors"]:
        defects.append(f"decode errors: {report['errors'][:2]}")
    step = report["max_video_step_s"]
    if step is None or step > 2.0 / fps + 1e-6:
        defects.append(f"video gap: largest pts step {step} s")
    sent_span = (sent["video"]["last_capture_s"] or 0) - (sent["video"]["first_capture_s"] or 0)
    file_span = ((report["video_last_s"] or 0) - (report["video_first_s"] or 0)) if report["video_first_s"] is not None else 0
    if sent_span - file_span > 1.0 / fps + 1e-6:
        defects.append(f"file ends {sent_span - file_span:.3f} s before the last frame sent")
    return defects


NO_FILE = {"video_frames": 0, "audio_frames": 0, "max_video_step_s": None, "errors": ["no file"],
           "video_first_s": None, "video_last_s": None}


def stream_result(s, files: list[dict], ff: dict | None, fps: int, counters) -> dict:
    """One stream's result: what was sent, received, recorded, its timings and defects."""
    defects = [] if len(files) == 1 else [f"{len(files)} files instead of 1"]
    if not s.sent["completed"]:
        defects.append(f"the publisher did not send the whole clip: {s.sent.get('error') or 'stopped'}")
    if "error" in s.stats:
        defects.append(f"no stream counters: {s.stats['error']}")
    report = files[0] if files else NO_FILE
    defects += file_defects(report, s.sent, fps)
    tracks = s.stats.get("Tracks", {})
    defects += received_defects(tracks, s.sent, counters)
    if s.max_lag_s > MAX_DISK_LAG_S:
        defects.append(f"file on disk lagged {s.max_lag_s:.2f} s behind the publisher (worker behind)")
    if s.main_durable.get("durable_s") is None:
        defects.append("files not durable in time after StopRecord")
    warnings = []
    late = s.sent["lateness"].get("max") or 0
    if late > MAX_PUBLISHER_LATENESS_S:
        warnings.append(f"publisher sent up to {late:.3f} s late (load generator overloaded)")
    result = {
        "index": s.index, "room": s.room, "worker_pid": s.worker_pid,
        "sent": {k: s.sent[k] for k in KINDS}, "publisher_lateness_s": s.sent["lateness"],
        "file": report, "max_disk_lag_s": round(s.max_lag_s, 3),
        "max_release_delay_s": {k: tracks.get(k, {}).get("max_release_delay_s") for k in KINDS},
        "received": {k: {f: tracks.get(k, {}).get(f) for f in counters.reported} for k in KINDS},
        "first_frame_s": s.first_frame_s, "probe_start_api_s": s.probe_start_api_s,
        "probe_stop": {k: v for k, v in (s.probe_durable or {}).items() if k != "files"},
        "main_stop": {k: v for k, v in (s.main_durable or {}).items() if k != "files"},
        "defects": defects, "warnings": warnings,
    }
    if ff is not None:
        ff_defects = []
        if ff["video_frames"] != s.ff_sent["video"]["frames"]:
            ff_defects.append(f"video frames {ff['video_frames']} of {s.ff_sent['video']['frames']} sent")
        if ff["audio_frames"] < s.ff_sent["audio"]["frames_from_video_start"]:
            ff_defects.append(f"audio frames {ff['audio_frames']} of {s.ff_sent['audio']['frames']} sent")
        result["ffmpeg"] = {"file": ff, "defects": ff_defects}
    return result


def level_summary(n: int, measured: dict, streams: list[dict], samples: list[dict]) -> dict:
    defective = [s for s in streams if s["defects"]]
    first = [s["first_frame_s"] for s in streams]
    result = {
        "n": n, **measured,
        "first_frame_s": {**distribution(first), "never": sum(v is None for v in first)},
        "start_record_api_s": distribution([s["probe_start_api_s"] for s in streams]),
        "stop_to_durable_s": {
            "short": distribution([s["probe_stop"].get("durable_s") for s in streams]),
            "long": distribution([s["main_stop"].get("durable_s") for s in streams]),
        },
        "stop_record_api_s": distribution([s["main_stop"].get("stop_api_s") for s in streams]
                                          + [s["probe_stop"].get("stop_api_s") for s in streams]),
        "max_disk_lag_s": max(s["max_disk_lag_s"] for s in streams),
        "max_release_delay_s": max((v or 0) for s in streams for v in s["max_release_delay_s"].values()),
        "defects": {"streams_with_defects": len(defective), "count": sum(len(s["defects"]) for s in streams),
                    "details": {str(s["index"]): s["defects"] for s in defective}},
        "warnings": [w for s in streams for w in s["warnings"]],
        "publisher_lateness_max_s": max((s["publisher_lateness_s"].get("max") or 0) for s in streams),
        "samples": samples,
        "streams": streams,
    }
    if "ffmpeg_cpu" in measured:
        ours, theirs = measured["cpu"]["per_stream_pct"], measured["ffmpeg_cpu"]["per_stream_pct"]
        result["ffmpeg_cpu"]["ratio_ours_to_ffmpeg"] = round(ours / theirs, 3) if theirs else None
        result["ffmpeg_cpu"]["streams_with_defects"] = sum(bool(s["ffmpeg"]["defects"]) for s in streams)
        result["ffmpeg_cpu"]["defects"] = {str(s["index"]): s["ffmpeg"]["defects"] for s in streams
                                           if s["ffmpeg"]["defects"]}
    return result
