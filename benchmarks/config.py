"""What a benchmark level is given: its options (`BenchConfig`), where it records
(`Storage`), the timing budget of a level and the defect thresholds."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testkit.node import NodeProcess, start_record_body
from testkit.rtp import ClipSpec, PublisherSpec

PROBE_BUDGET_S = 6.0  # clip time reserved for the first-frame probes
LEAD_IN_S = 1.0  # media before the probes start (publishers all sending)
TAIL_S = 2.0  # clip time after the window
LOOP_CLIP_S = 60  # longer runs repeat a clip this long (a whole number of GOPs at the defaults)
# defect thresholds
MAX_RELEASE_DELAY_S = 0.3  # the jitter buffer waits 250 ms at most for a lost packet
MAX_DISK_LAG_S = 2.5  # fragments are cut at least every second (+ one GOP boundary + jitter)
MAX_PUBLISHER_LATENESS_S = 0.2  # beyond this the load generator, not the node, is the problem
# OutputFolder of the tasks: a file's object key is its folder then its FileId
MAIN_FOLDER = "main/"
PROBE_FOLDER = "probe/"


@dataclass
class BenchConfig:
    publisher: str = "rtp"
    storage: str = "disk"
    seconds: float = 30.0
    clip: ClipSpec = ClipSpec(width=1280, height=720, fps=30, keyint=60, bitrate_kbps=2500)
    sample_interval: float = 2.0
    ffmpeg: str | None = None  # the ffmpeg binary when comparing
    profile_seconds: float = 0.0  # py-spy a worker for this long during the window
    profile_dir: Path = Path("/tmp")  # where py-spy's raw stacks are kept (the results folder)
    node_args: tuple[str, ...] = ()  # more `recnode serve` options (admission limits)
    workdir: Path = Path("/tmp")
    seed: int = 8

    @property
    def gop_s(self) -> float:
        return self.clip.keyint / self.clip.fps

    @property
    def clip_s(self) -> int:
        # whole seconds, so runs of the same length share the clip cached on disk
        return int(round(LEAD_IN_S + PROBE_BUDGET_S + self.seconds + TAIL_S + 1))

    def publisher_spec(self, **over) -> PublisherSpec:
        long_run = self.clip_s > LOOP_CLIP_S
        return PublisherSpec(duration_s=self.clip_s, clip=self.clip, loop_clip_s=LOOP_CLIP_S if long_run else 0.0,
                             keep_sent_bytes=not long_run, **over)


@dataclass
class Storage:
    """Where the main and probe tasks write: the node's disk, or S3 (moto)."""

    kind: str  # disk | s3
    moto: Any = None
    bucket: str = "recnode-bench"

    def node_args(self) -> tuple[str, ...]:
        return ("--storage-endpoint", f"1={self.moto.endpoint}") if self.kind == "s3" else ()

    def body(self, room: str, folder: str) -> dict:
        body = start_record_body(room, bucket=self.bucket)
        body["RecordOutputParams"]["OutputFolder"] = folder
        if self.kind == "s3":
            body["StorageParams"] = {"Vendor": 1, "Region": "us-east-1", "Bucket": self.bucket,
                                     "AccessKeyId": self.moto.access_key_id,
                                     "AccessKeySecret": self.moto.access_key_secret}
        return body

    def local_path(self, node: NodeProcess, file_id: str) -> Path | None:
        """Where the bytes of an object being recorded are on this machine: the file
        itself on node disk, its spool entry for a bucket."""
        if self.kind == "disk":
            return node.data_dir / "storage" / self.bucket / file_id
        spool = node.data_dir / "spool"
        for meta in spool.glob("*/meta.json"):
            try:
                if json.loads(meta.read_text()).get("key") == file_id:
                    return meta.parent / "data"
            except (OSError, ValueError):
                continue
        return None

    def fetch(self, node: NodeProcess, file_id: str, into: Path) -> Path:
        """The finished object as a local file, to decode."""
        if self.kind == "disk":
            return node.data_dir / "storage" / self.bucket / file_id
        target = into / file_id.replace("/", "_")
        body = self.moto.client().get_object(Bucket=self.bucket, Key=file_id)["Body"].read()
        target.write_bytes(body)
        return target


def admission_args(mode: str, n: int) -> tuple[str, ...]:
    """`recnode serve` options that keep the node's admission control out of the way
    (mode "off": the benchmark measures how much the node can record, not where it is
    configured to stop), for the options this node has."""
    if mode != "off":
        return ()
    import subprocess
    import sys

    from testkit.node import REPO

    help_text = subprocess.run([sys.executable, "-m", "engine.cli", "serve", "--help"], cwd=REPO,
                               capture_output=True, text=True, timeout=60).stdout
    wanted = {"--max-streams": str(4 * n + 16), "--max-tasks": str(100_000), "--cpu-cap": "100"}
    return tuple(part for option, value in wanted.items() if option in help_text for part in (option, value))
