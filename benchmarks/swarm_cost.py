"""python -m benchmarks.swarm_cost: what the fast WHIP publisher (benchmarks.whip_swarm)
costs per peer, and how many peers it keeps on time on half a core, without a node.

    python -m benchmarks.swarm_cost --peers 25,50,100 --seconds 20

For each N: a *sink* process (`python -m benchmarks.swarm_cost sink`, on the recorder
CPUs) answers N WHIP offers with aiortc peers that negotiate ICE and DTLS and then drop
every datagram but STUN as it arrives (ICE consent goes on, media costs the sink one
read); one swarm process (on the load CPU) publishes N streams of the benchmark
clip to it, their first frames spread over one second. The swarm's process CPU time
(user + system, psutil) over a window of `--seconds` once every peer sends, divided by
the window, is its CPU; `lateness` is how late the swarm sent each frame (its
manifests). N is *sustained* when every peer sent the whole clip, without error, the
99th percentile of lateness is under 0.1 s (3 frames; the node's jitter buffer waits
longer, and the harness warns about a publisher from 0.2 s on), and the swarm's CPU
is at most `--budget` % of a core (default 50).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import whip_swarm, whip_publisher
from benchmarks.percentiles import distribution
from benchmarks.procs import Pinning
from testkit.process import child_env

RESULTS = Path(__file__).resolve().parent / "results"
SPREAD_S = 1.0  # first frames of the N peers spread over this
LEAD_S = 1.0  # after the last peer's first frame, before the window
CONNECT_CPU_S = 0.1  # per peer, swarm and sink (measured here: ~0.05 s each), before the first frames
LATE_P99_S = 0.1  # a swarm that sends 1 % of its frames later than this is not keeping up


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.swarm_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", default="25,50,100", help="comma-separated N (default 25,50,100)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window per N (default 20)")
    parser.add_argument("--budget", type=float, default=50.0, help="%% of a core the swarm may use (default 50)")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--keyint", type=int, default=60)
    parser.add_argument("--bitrate", type=int, default=2500, help="video kbps (default 2500)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp"))
    args = parser.parse_args(argv)
    args.counts = [int(n) for n in args.peers.split(",") if n.strip()]
    args.width, args.height = (int(v) for v in args.size.lower().split("x"))
    return args


def measure(n: int, args, clip: Path, spec, pinning: Pinning, workdir: Path) -> dict:
    import psutil

    workdir.mkdir(parents=True, exist_ok=True)
    sink = subprocess.Popen([sys.executable, "-m", "benchmarks.swarm_cost", "sink"], env=child_env(),
                            stdout=subprocess.PIPE, text=True, preexec_fn=pinning.recorder_preexec())
    swarm = whip_swarm.start(clip, preexec_fn=pinning.load_preexec())
    try:
        base = sink.stdout.readline().strip()
        first = time.time() + whip_swarm.CONNECT_S + n * CONNECT_CPU_S
        specs = []
        for i in range(n):
            specs.append(spec.__class__(**{**spec.__dict__, "start_time": first + SPREAD_S * i / n, "seed": i,
                                           "manifest_path": str(workdir / f"peer-{i}.json")}))
            whip_swarm.add_peer(swarm, specs[-1], f"{base}/whip/peer-{i}")
        for s in specs:
            whip_publisher.wait_json(whip_publisher.live_path(s), first - time.time() + 30, swarm, s.manifest_path)
        connect_cpu_s = sum(psutil.Process(swarm.pid).cpu_times()[:2])  # start-up included
        time.sleep(max(0.0, first + SPREAD_S + LEAD_S - time.time()))
        process = psutil.Process(swarm.pid)
        cpu0, wall0 = sum(process.cpu_times()[:2]), time.monotonic()
        time.sleep(args.seconds)
        cpu1, wall1 = sum(process.cpu_times()[:2]), time.monotonic()
        sent = [whip_publisher.wait_json(s.manifest_path, 60, swarm, s.manifest_path) for s in specs]
    finally:
        for child in (swarm, sink):
            child.terminate()
            child.wait(20)
    lateness = [at - (m["t0_mono"] + capture) for m in sent for kind in ("video", "audio")
                for _, capture, at in m[kind]]
    cpu_pct = 100.0 * (cpu1 - cpu0) / (wall1 - wall0)
    late = distribution(lateness)
    errors = [m["error"] for m in sent if m["error"]]
    whole = all(m["completed"] for m in sent) and not errors
    return {"n": n, "cpu_s_per_peer_until_live": round(connect_cpu_s / n, 4), "cpu_pct": round(cpu_pct, 2),
            "cpu_pct_per_peer": round(cpu_pct / n, 3), "lateness_s": late, "completed": whole, "errors": errors[:3],
            "sustained": whole and (late.get("p99") or 0) < LATE_P99_S and cpu_pct <= args.budget}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sink"]:
        asyncio.run(_sink())
        return 0
    args = parse_args(argv)
    from testkit.rtp import ClipSpec, PublisherSpec

    pinning = Pinning.choose("auto")
    pinning.as_load()
    clip_spec = ClipSpec(width=args.width, height=args.height, fps=args.fps, keyint=args.keyint,
                         bitrate_kbps=args.bitrate)
    spec = PublisherSpec(duration_s=SPREAD_S + LEAD_S + args.seconds + 2.0, clip=clip_spec)
    print("encoding the clip once (cached) ...", flush=True)
    clip = whip_publisher.ensure_clip(spec)
    levels = []
    for n in args.counts:
        level = measure(n, args, clip, spec, pinning, args.workdir / f"swarm-cost-{n}")
        levels.append(level)
        verdict = "sustained" if level["sustained"] else "NOT sustained"
        print(f"N = {n}: swarm cpu {level['cpu_pct']:.1f}% ({level['cpu_pct_per_peer']:.3f}%/peer), lateness p99 "
              f"{level['lateness_s'].get('p99')} s max {level['lateness_s'].get('max')} s, {verdict}"
              + (f" {level['errors']}" if level["errors"] else ""), flush=True)
    result = {"command": "python -m benchmarks.swarm_cost " + " ".join(argv), "clip": clip_spec.__dict__,
              "budget_pct": args.budget, "pinning": pinning.describe(), "levels": levels,
              "largest_sustained_n": max((lv["n"] for lv in levels if lv["sustained"]), default=None)}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "swarm-cost.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"results: {path}", flush=True)
    return 0


async def _sink() -> None:
    """WHIP answers from aiortc peers that stop reading once connected (see the module doc)."""
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from testkit.whip import WhipEndpoint
    from testkit.whip.aiortc_wire import drop_media, loopback_only

    loopback_only()
    peers = []

    async def answer(offer: str) -> str:
        pc = RTCPeerConnection()
        peers.append(pc)
        pc.on("connectionstatechange", lambda: pc.connectionState == "connected" and drop_media(pc))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return pc.localDescription.sdp

    endpoint = WhipEndpoint(answer)
    url = await endpoint.start("x")
    print(url.rsplit("/whip/", 1)[0], flush=True)
    await asyncio.Future()


if __name__ == "__main__":
    sys.exit(main())
