"""Results: one JSON per run under the results folder, and from all of them a
Markdown summary (summary.md) and PNG plots."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path


def machine() -> dict:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        import psutil

        mem_gb = round(psutil.virtual_memory().total / 1024**3, 1)
    except Exception:  # noqa: BLE001
        pass
    try:
        import av

        av_version = f"{av.__version__} (FFmpeg libs {'.'.join(map(str, av.library_versions.get('libavformat', ())))})"
    except Exception:  # noqa: BLE001
        av_version = "?"
    return {"nproc": os.cpu_count(), "cpu_model": model, "memory_gb": mem_gb, "kernel": platform.release(),
            "python": sys.version.split()[0], "pyav": av_version,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def write_run(out: Path, name: str, result: dict) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    return path


def load_runs(out: Path) -> list[dict]:
    runs = []
    for path in sorted(out.glob("*.json")):
        try:
            run = json.loads(path.read_text())
        except ValueError:
            continue
        if isinstance(run, dict) and run.get("kind") in ("streams", "api_load"):
            run["_file"] = path.name
            runs.append(run)
    # the widest sweep first (its levels are the plots' main series), API load last
    return sorted(runs, key=lambda r: (r["kind"] != "streams", -len(r.get("levels", [])), r["name"]))


def _f(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _p(d: dict | None, digits: int = 3) -> str:
    if not d or not d.get("n"):
        return "–"
    return f"{_f(d['p50'], digits)} / {_f(d['p95'], digits)}"


def streams_table(runs: list[dict]) -> list[str]:
    lines = ["| run | N | CPU per stream (% of a core) | CPU total % (workers / node) | USS per worker MB (mean / max) "
             "| PSS per worker MB (mean / max) | USS growth MB (max, window) | StartRecord → first frame on disk s "
             "(p50 / p95) | StopRecord → durable s, short (p50 / p95) | StopRecord → durable s, long (p50 / p95) "
             "| max disk lag s | publishers CPU per stream % | streams with defects |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        for level in run["levels"]:
            cpu, mem = level["cpu"], level["memory"]
            lines.append(
                f"| {run['name']} | {level['n']} | {_f(cpu['per_stream_pct'])} | {_f(cpu['total_pct'], 1)} "
                f"({_f(cpu['workers_pct'], 1)} / {_f(cpu['node_pct'], 1)}) | {_f(mem['uss_mb_mean'], 1)} / "
                f"{_f(mem['uss_mb_max'], 1)} | {_f(mem['pss_mb_mean'], 1)} / {_f(mem['pss_mb_max'], 1)} | "
                f"{_f(mem['uss_growth_mb_max'], 2)} | {_p(level['first_frame_s'])} | "
                f"{_p(level['stop_to_durable_s']['short'])} | {_p(level['stop_to_durable_s']['long'])} | "
                f"{_f(level['max_disk_lag_s'])} | {_f(level.get('publishers_cpu_pct_per_stream'), 3)} | "
                f"{level['defects']['streams_with_defects']} of {level['n']} |")
    return lines


def ffmpeg_table(runs: list[dict]) -> list[str]:
    rows = [(run, level) for run in runs for level in run["levels"] if level.get("ffmpeg_cpu")]
    if not rows:
        return []
    lines = ["| run | N | ours: CPU per stream % | FFmpeg: CPU per stream % | ours / FFmpeg | FFmpeg streams with "
             "missing frames |", "|---|---|---|---|---|---|"]
    for run, level in rows:
        ff = level["ffmpeg_cpu"]
        lines.append(f"| {run['name']} | {level['n']} | {_f(level['cpu']['per_stream_pct'])} | "
                     f"{_f(ff['per_stream_pct'])} | {_f(ff.get('ratio_ours_to_ffmpeg'))} | "
                     f"{ff.get('streams_with_defects', '–')} of {level['n']} |")
    return lines


def api_table(runs: list[dict]) -> list[str]:
    rows = [run for run in runs if run["kind"] == "api_load"]
    if not rows:
        return []
    lines = ["| run | requests/s (asked / achieved) | requests | errors | action | p50 ms | p95 ms | p99 ms | max ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for run in rows:
        r = run["api_load"]
        for action, d in r["latency_s"].items():
            if not d.get("n"):
                continue
            lines.append(f"| {run['name']} | {_f(r['rate_requested_per_s'], 0)} / {_f(r['rate_achieved_per_s'], 1)} | "
                         f"{r['requests']} | {r['errors']} | {action} | {1000 * d['p50']:.1f} | {1000 * d['p95']:.1f} | "
                         f"{1000 * d['p99']:.1f} | {1000 * d['max']:.1f} |")
    return lines


def profile_lines(runs: list[dict]) -> list[str]:
    lines = []
    for run in runs:
        for level in run.get("levels", []):
            prof = level.get("profile")
            if not prof or not prof.get("samples"):
                continue
            lines.append(f"Worker {prof['pid']} of `{run['name']}` at N = {level['n']}, {prof['seconds']:.0f} s, "
                         f"{prof['samples']} busy samples (py-spy, idle excluded):")
            lines.append("")
            lines.append("| function | self % | | function | total % |")
            lines.append("|---|---|---|---|---|")
            for own, total in zip(prof["self"][:8], prof["total"][:8]):
                lines.append(f"| `{own['function']}` | {own['share_pct']} | | `{total['function']}` | "
                             f"{total['share_pct']} |")
            lines.append("")
    return lines


def limit_lines(runs: list[dict]) -> list[str]:
    lines = []
    for run in runs:
        if run["kind"] != "streams":
            continue
        limit = run.get("limit", {})
        text = f"- `{run['name']}`: largest N with zero defects: {_f(limit.get('largest_clean_n')) if limit.get('largest_clean_n') else 'none'}"
        if limit.get("first_defective_n") is not None:
            text += f"; first N with defects: {limit['first_defective_n']} (the sweep stopped there)"
        else:
            text += " (no N tried had defects)"
        lines.append(text)
        for error in run.get("errors", []):
            lines.append(f"  - N = {error['n']} could not finish: `{error['error'][:300]}`")
    return lines


def summary_markdown(runs: list[dict], plots: list[str]) -> str:
    out = ["# Benchmark results", "",
           "Written by `python -m benchmarks.run` (see benchmarks/README.md); one JSON per run beside this file.", ""]
    stable = ("nproc", "cpu_model", "memory_gb", "kernel", "python", "pyav")
    machines = {json.dumps({k: run.get("machine", {}).get(k) for k in stable}, sort_keys=True) for run in runs}
    for m in sorted(machines):
        m = json.loads(m)
        out.append(f"Machine: {m.get('nproc')} CPUs ({m.get('cpu_model')}), {m.get('memory_gb')} GB, Linux "
                   f"{m.get('kernel')}, Python {m.get('python')}, PyAV {m.get('pyav')}.")
    out.append("")
    for run in runs:
        cfg = run.get("config", {})
        out.append(f"- `{run['name']}`: `{run.get('command', '')}`"
                   + (f" — {cfg.get('width')}x{cfg.get('height')}@{cfg.get('fps')}, {cfg.get('bitrate_kbps')} kbps, "
                      f"key frame every {cfg.get('keyint')} frames, {cfg.get('audio') or '48 kHz Opus'}; "
                      f"{cfg.get('pinning')}"
                      if run["kind"] == "streams" else ""))
    streams = [run for run in runs if run["kind"] == "streams"]
    if streams:
        out += ["", "## Recording live streams", "", *streams_table(streams), ""]
        out += ["Runs are named `<publisher>-<storage>`: `rtp`, plain RTP (ours); `ffmpeg-rtp`, plain RTP sent by "
                "Debian's `ffmpeg -re -c copy -f rtp`; `whip`, WebRTC from FFmpeg's WHIP client (a process per "
                "stream); `whip-swarm`, WebRTC from one process of aiortc peers sending pre-packetized SRTP. "
                "CPU: user + system time of the node's process tree (node, fork server, workers), publishers "
                "excluded, over the measured window, as % of one core. Short recordings: a task started while the "
                "stream is live and stopped once its first frame was on disk; long: the whole run.", ""]
        out += ["### Largest N with zero defects", "", *limit_lines(streams), ""]
        ff = ffmpeg_table(streams)
        if ff:
            out += ["## Against FFmpeg (`ffmpeg -c copy` to fragmented MP4, same streams, same run)", "", *ff, ""]
    api = api_table(runs)
    if api:
        out += ["## StartRecord / StopRecord latency under load", "", *api, ""]
    prof = profile_lines(runs)
    if prof:
        out += ["## Where a worker spends its CPU", "", *prof]
    if plots:
        out += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(out) + "\n"


def run_markdown(run: dict) -> str:
    return summary_markdown([run], [])


def plots(out: Path, runs: list[dict]) -> list[str]:
    """PNG plots of every streams run; [] when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install matplotlib)", flush=True)
        return []
    streams = [run for run in runs if run["kind"] == "streams" and run["levels"]]
    if not streams:
        return []
    from matplotlib.ticker import MaxNLocator

    written = []
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    def save(fig, axes, name: str, legend: bool = True) -> None:
        for ax in axes:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.set_ylim(bottom=0)
            if legend:
                ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(name)

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, run in enumerate(streams):
        color = colors[i % len(colors)]
        ns = [lv["n"] for lv in run["levels"]]
        left.plot(ns, [lv["cpu"]["per_stream_pct"] for lv in run["levels"]], "o-", color=color,
                  label=f"recnode {run['name']}")
        right.plot(ns, [lv["cpu"]["total_pct"] for lv in run["levels"]], "o-", color=color,
                   label=f"recnode {run['name']}")
        ff = [(lv["n"], lv["ffmpeg_cpu"]) for lv in run["levels"] if lv.get("ffmpeg_cpu")]
        if ff:
            left.plot([n for n, _ in ff], [c["per_stream_pct"] for _, c in ff], "s--", color="black",
                      label=f"FFmpeg ({run['name']})")
            right.plot([n for n, _ in ff], [c["total_pct"] for _, c in ff], "s--", color="black",
                       label=f"FFmpeg ({run['name']})")
        bad = [lv for lv in run["levels"] if lv["defects"]["streams_with_defects"]]
        if bad:
            right.plot([lv["n"] for lv in bad], [lv["cpu"]["total_pct"] for lv in bad], "rx", markersize=12,
                       label="defects" if run is streams[0] else None)
    cores = len(streams[0].get("config", {}).get("recorder_cpus") or []) or None
    if cores:
        right.axhline(100 * cores, color="grey", linestyle=":", label=f"{cores} core(s) for the recorder")
    left.set(title="CPU per recorded stream", xlabel="concurrent streams N", ylabel="% of one core")
    right.set(title="CPU of node + workers, total", xlabel="concurrent streams N", ylabel="% of one core")
    save(fig, (left, right), "cpu_per_stream.png")

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, run in enumerate(streams):
        color = colors[i % len(colors)]
        ns = [lv["n"] for lv in run["levels"]]
        uss = [lv["memory"]["uss_mb_mean"] for lv in run["levels"]]
        uss_max = [lv["memory"]["uss_mb_max"] for lv in run["levels"]]
        pss = [lv["memory"]["pss_mb_mean"] for lv in run["levels"]]
        ax.errorbar(ns, uss, yerr=[[0] * len(ns), [m - u for m, u in zip(uss_max, uss)]], fmt="o-", capsize=3, color=color,
                    label=f"USS {run['name']} (mean, bar to max)")
        ax.plot(ns, pss, "s--", color=color, label=f"PSS {run['name']} (mean)")
    ax.axhline(25, color="grey", linestyle=":", label="target: 25 MB USS")
    ax.set(title="Memory per worker", xlabel="concurrent streams N", ylabel="MB")
    save(fig, (ax,), "memory_per_worker.png")

    # USS of every worker over the window, for the longest window (growth shows there), then the largest N
    run, level = max(((r, lv) for r in streams for lv in r["levels"]),
                     key=lambda pair: (pair[1].get("window_s", 0), pair[1]["n"]))
    if level["samples"]:
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        pids = sorted({p for s in level["samples"] for p in s["uss_mb"]})
        for pid in pids:
            points = [(s["t"], s["uss_mb"][pid]) for s in level["samples"] if pid in s["uss_mb"]]
            ax.plot([t for t, _ in points], [m for _, m in points], "-", linewidth=1)
        ax.set(title=f"USS of each worker over the run ({run['name']}, N = {level['n']})", xlabel="s into the window",
               ylabel="MB")
        save(fig, (ax,), "memory_over_time.png", legend=False)
    return written


def write_summary(out: Path) -> Path:
    runs = load_runs(out)
    written = plots(out, runs)
    path = out / "summary.md"
    path.write_text(summary_markdown(runs, written))
    return path
