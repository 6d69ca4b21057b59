"""python -m benchmarks.run: how many live streams one node records, at what CPU
and memory per stream, against FFmpeg; how fast files are durable; API latency.

See benchmarks/README.md. Examples:

    python -m benchmarks.run --streams 1,4,8 --seconds 30 --storage disk
    python -m benchmarks.run --streams 4 --seconds 30 --storage s3
    python -m benchmarks.run --streams 4 --seconds 30 --ffmpeg
    python -m benchmarks.run --publisher whip --streams 1,4 --seconds 12
    python -m benchmarks.run --publisher whip-swarm --streams 8,16,32,64,100 --seconds 30
    python -m benchmarks.run --publisher ffmpeg-rtp --streams 8 --seconds 30 --ffmpeg
    python -m benchmarks.run --api-load 10
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks import report
from benchmarks.ffmpeg_ref import ffmpeg_version, require_ffmpeg
from benchmarks.procs import Pinning
from benchmarks.publishers import publisher_kind
from benchmarks.config import BenchConfig, Storage, admission_args
from benchmarks.level import Level
from testkit.rtp import ClipSpec

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", default=None,
                        help="comma-separated N to record concurrently, in order (default 1,4,8; none with "
                             "--api-load unless given)")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window per N (default 30)")
    parser.add_argument("--storage", choices=("disk", "s3"), default="disk",
                        help="node disk (Vendor 0) or S3 through moto's server started here (Vendor 1)")
    parser.add_argument("--publisher", default="rtp", choices=("rtp", "whip", "whip-swarm", "ffmpeg-rtp"),
                        help="rtp (plain RTP, ours), whip (WebRTC: FFmpeg's whip muxer, a process per stream), "
                             "whip-swarm (WebRTC: one process of aiortc peers sending pre-packetized SRTP), "
                             "ffmpeg-rtp (plain RTP sent by Debian's ffmpeg -re -c copy -f rtp)")
    parser.add_argument("--ffmpeg", action="store_true",
                        help="also remux the same streams with the FFmpeg command line, in the same run")
    parser.add_argument("--api-load", type=float, metavar="SECONDS", default=0.0,
                        help="StartRecord/StopRecord pairs on rooms without streams for SECONDS")
    parser.add_argument("--api-rate", type=float, default=50.0, help="requests per second for --api-load")
    parser.add_argument("--size", default="1280x720", help="video size (default 1280x720)")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--keyint", type=int, default=60, help="frames between key frames (default 60: 2 s)")
    parser.add_argument("--bitrate", type=int, default=2500, help="video kbps (default 2500)")
    parser.add_argument("--sample-interval", type=float, default=2.0, help="seconds between samples / progress lines")
    parser.add_argument("--pin", choices=("auto", "none"), default="auto",
                        help="auto: publishers on the last CPU, node + workers (+ ffmpeg) on the others")
    parser.add_argument("--keep-going", action="store_true",
                        help="go on with larger N after an N with defects (default: stop the sweep there)")
    parser.add_argument("--profile", type=float, default=0.0, metavar="SECONDS",
                        help="sample one worker with py-spy for SECONDS during each window")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    parser.add_argument("--admission", choices=("off", "node"), default="off",
                        help="off (default): raise the node's admission limits (--max-streams, --max-tasks, "
                             "--cpu-cap) out of the way; node: keep its own, a refusal ends the sweep")
    parser.add_argument("--append", action="store_true",
                        help="add these N to the results file of the same name (same options) instead of replacing it")
    parser.add_argument("--name", default=None, help="results file name (default from the options)")
    parser.add_argument("--workdir", type=Path, default=None, help="where nodes keep data (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.streams is None:
        args.streams = "" if args.api_load else "1,4,8"
    try:
        args.stream_counts = [int(n) for n in args.streams.split(",") if n.strip()]
        args.width, args.height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error("--streams takes N,N,... and --size WxH")
    if any(n < 1 for n in args.stream_counts):
        parser.error("--streams: every N must be >= 1")
    if not args.stream_counts and not args.api_load:
        parser.error("nothing to do: give --streams and/or --api-load")
    return args


def default_name(args: argparse.Namespace) -> str:
    if not args.stream_counts:
        return "api-load"
    return f"{args.publisher}-{args.storage}" + ("-ffmpeg" if args.ffmpeg else "")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kind = publisher_kind(args.publisher) if args.stream_counts else None
    ffmpeg = require_ffmpeg() if args.ffmpeg else None
    pinning = Pinning.choose(args.pin)
    pinning.as_load()
    name = args.name or default_name(args)
    command = "python -m benchmarks.run " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    result = {"kind": "streams" if args.stream_counts else "api_load", "name": name, "command": command,
              "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": report.machine()}
    print(f"benchmark {name}: {pinning.describe()}", flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="recnode-bench-", dir=args.workdir))
    moto = None
    storage = Storage(args.storage)
    try:
        if args.storage == "s3":
            from testkit.moto_server import MotoServer

            moto = MotoServer(iam_auth=True).start()  # on the load CPU, like the publishers
            storage.moto = moto
            moto.create_bucket(storage.bucket)
        if args.stream_counts:
            result.update(run_streams(args, kind, ffmpeg, pinning, storage, workdir))
        if args.api_load:
            from benchmarks.api_load import run_api_load

            result["api_load"] = run_api_load(args.api_load, args.api_rate, workdir / "api-load", pinning, storage)
    except BaseException:
        print(f"benchmark failed: node logs and files kept in {workdir}", file=sys.stderr, flush=True)
        raise
    else:
        if not getattr(args, "keep_workdir", False):
            shutil.rmtree(workdir, ignore_errors=True)
    finally:
        if moto is not None:
            moto.stop()
    if args.append:
        result = merge_previous(args.out / f"{name}.json", result)
    path = report.write_run(args.out, name, result)
    summary = report.write_summary(args.out)
    print(f"results: {path}  summary: {summary}", flush=True)
    return 0


def limit_of(levels: list[dict], errors: list[dict]) -> dict:
    """The largest N below the first N with defects (or that could not finish)."""
    bad = [lv["n"] for lv in levels if lv["defects"]["streams_with_defects"]] + [e["n"] for e in errors]
    first_bad = min(bad) if bad else None
    clean = [lv["n"] for lv in levels if first_bad is None or lv["n"] < first_bad]
    return {"largest_clean_n": max(clean) if clean else None, "first_defective_n": first_bad}


def merge_previous(path: Path, result: dict) -> dict:
    """--append: the levels of an earlier run of the same name, then these (a level of
    the same N replaces the earlier one)."""
    if not path.exists() or result.get("kind") != "streams":
        return result
    import json

    old = json.loads(path.read_text())
    new_ns = {lv["n"] for lv in result["levels"]} | {e["n"] for e in result.get("errors", [])}
    levels = sorted([lv for lv in old.get("levels", []) if lv["n"] not in new_ns] + result["levels"],
                    key=lambda lv: lv["n"])
    errors = [e for e in old.get("errors", []) if e["n"] not in new_ns] + result.get("errors", [])
    commands = old.get("commands", [old.get("command")]) + [result["command"]]
    return {**result, "command": " && ".join(c for c in commands if c), "commands": commands, "levels": levels,
            "errors": errors, "limit": limit_of(levels, errors)}


def run_streams(args, kind, ffmpeg, pinning: Pinning, storage: Storage, workdir: Path) -> dict:
    clip = ClipSpec(width=args.width, height=args.height, fps=args.fps, keyint=args.keyint, bitrate_kbps=args.bitrate)
    cfg = BenchConfig(publisher=args.publisher, storage=args.storage, seconds=args.seconds, clip=clip,
                      sample_interval=args.sample_interval, ffmpeg=ffmpeg, profile_seconds=args.profile,
                      workdir=workdir, profile_dir=args.out, node_args=admission_args(args.admission, max(args.stream_counts)))
    began = time.monotonic()
    print("encoding the clip once (cached on disk for later runs) ...", flush=True)
    kind.prepare(cfg.publisher_spec())
    print(f"clip ready after {time.monotonic() - began:.1f} s", flush=True)
    levels, first_defective, errors = [], None, []
    for n in args.stream_counts:
        try:
            level = Level(cfg, n, storage, pinning, kind, f"{args.publisher}-{args.storage}").run()
        except Exception as error:  # noqa: BLE001 - a level that cannot finish is a result too
            import traceback

            traceback.print_exc()
            errors.append({"n": n, "error": repr(error)[:1000]})
            first_defective = n
            print(f"N = {n} failed ({error!r:.300}): the sweep stops here; files kept in {workdir}", flush=True)
            args.keep_workdir = True
            break
        levels.append(level)
        if level["defects"]["streams_with_defects"]:
            first_defective = n
            args.keep_workdir = True  # the files and node log a defect is read from
            print(f"N = {n}: files and node log kept in {workdir}", flush=True)
            if not args.keep_going:
                print(f"N = {n} had defects: the sweep stops here (--keep-going to go on)", flush=True)
                break
    return {
        "config": {"publisher": args.publisher, "storage": args.storage, "seconds": args.seconds,
                   "width": clip.width, "height": clip.height, "fps": clip.fps, "keyint": clip.keyint,
                   "bitrate_kbps": clip.bitrate_kbps, "clip_s": cfg.clip_s, "audio": kind.audio,
                   "pinning": pinning.describe(), "admission": args.admission, "node_args": list(cfg.node_args), "recorder_cpus": sorted(pinning.recorder),
                   "load_cpus": sorted(pinning.load), "ffmpeg": ffmpeg_version(ffmpeg) if ffmpeg else None},
        "levels": levels,
        "errors": errors,
        "limit": limit_of(levels, errors),
    }


if __name__ == "__main__":
    sys.exit(main())
