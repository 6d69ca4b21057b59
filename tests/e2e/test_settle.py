"""After a crash the file list tells what is stored: a node SIGKILLed mid-recording
(its workers see the pipe close and finish their files, with no one to tell), or a
worker SIGKILLed (its files end where its bytes do, an HLS playlist unfinished).
Real node processes, a real RTP publisher, moto's S3 over HTTP."""

import os
import re
import signal

from testkit import probe
from testkit.node import NodeProcess
from testkit.ports import free_port, free_udp_range
from testkit.rtp import PublisherSpec
from tests.e2e.publishing import publish, run_publisher
from tests.e2e.test_crash import alive, wait_until
from tests.e2e.test_storage import s3_body, storage_args
from workers.main import TICK_S

FPS = 30
FRAME_S = 1 / FPS
AAC_FRAME_S = 1024 / 48000
# A killed worker's last audio may run on past its last video frame by what came in its last tick
# (HLS's Duration counts by video, as FFmpeg's playlist does)
AUDIO_RUN_ON_S = max(AAC_FRAME_S, TICK_S)
SETTLE_TIMEOUT_S = 40


def task_bodies(room, moto_server, bucket):
    """mp4 and HLS, each on the node's disk and in the bucket; one HLS playlist uploaded while recording."""
    bodies = {}
    for fmt in ("mp4", "hls"):
        disk = s3_body(room, moto_server, bucket, fmt)
        disk["RecordOutputParams"]["OutputFolder"] = f"{room}/disk-{fmt}/"
        disk["StorageParams"] = {"Vendor": 0, "Bucket": "bucket", "AccessKeyId": "a", "AccessKeySecret": "b"}
        bodies[f"{fmt}-disk"] = disk
        bodies[f"{fmt}-s3"] = s3_body(room, moto_server, bucket, fmt)
    bodies["hls-disk"]["RecordOutputParams"]["RealtimeUploadFragment"] = True
    return bodies


class Stored:
    """Reads a task's objects where they are: the node's disk or moto's bucket."""

    def __init__(self, node, moto_server, bucket, tmp_path):
        self.node, self.client, self.bucket, self.tmp_path = node, moto_server.client(), bucket, tmp_path

    def get(self, name, key) -> bytes | None:
        if name.endswith("-disk"):
            path = self.node.data_dir / "storage" / "bucket" / key
            return path.read_bytes() if path.exists() else None
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def local_copy(self, name, key) -> tuple:
        """The file (an HLS playlist with every stored segment) copied to tmp_path:
        (its path, bytes stored, the segments stored)."""
        folder = self.tmp_path / name
        folder.mkdir(exist_ok=True)
        data = self.get(name, key)
        assert data is not None, key
        local = data
        if key.endswith(".m3u8"):  # a bucket's playlist lists segments by URL: the copies sit beside it
            local = b"\n".join(line if line.startswith(b"#") else line.rsplit(b"/", 1)[-1]
                                for line in data.split(b"\n"))
        (folder / key.rsplit("/", 1)[-1]).write_bytes(local)
        size, segments = len(data), []
        if key.endswith(".m3u8"):
            while (segment := self.get(name, f"{key.removesuffix('.m3u8')}_{len(segments)}.ts")) is not None:
                segments.append(f"{key.rsplit('/', 1)[-1].removesuffix('.m3u8')}_{len(segments)}.ts")
                (folder / segments[-1]).write_bytes(segment)
                size += len(segment)
        return folder / key.rsplit("/", 1)[-1], size, segments


def decoded_s(report) -> float:
    """How long the decoded media lasts: first frame to the end of the last one, either track."""
    starts = [t for t in (report.video_first_s, report.audio_first_s) if t is not None]
    ends = []
    if report.video_first_s is not None:
        ends.append(report.video_first_s + report.video_duration_s)
    if report.audio_first_s is not None:
        ends.append(report.audio_first_s + report.audio_duration_s)
    return max(ends) - min(starts)


def check_settled(stored, name, folder, entry) -> float:
    """FileSize is what is stored, Duration what it decodes to, an HLS playlist lists
    every stored segment with its true duration."""
    assert entry["Status"] == 3, (name, entry)
    path, size, segments = stored.local_copy(name, folder + entry["FileId"])  # FileId is the bare name
    assert entry["FileSize"] == size, (name, entry["FileSize"], size)
    report = probe.decode_all(path)
    assert report.errors == () or name.startswith("mp4"), (name, report.errors)  # a cut fMP4 may end mid-frame
    assert report.video_frames > 60, (name, report)
    decoded = decoded_s(report)
    tolerance = FRAME_S + (AUDIO_RUN_ON_S if name.startswith("hls") else 0)  # HLS: by its video, AAC runs on
    assert abs(entry["Duration"] / 1000 - decoded) <= tolerance, (name, entry["Duration"], decoded)
    if segments:
        text = path.read_text()
        assert "#EXTINF:0.000000" not in text and text.rstrip().endswith("#EXT-X-ENDLIST"), (name, text)
        listed = [line for line in text.splitlines() if line and not line.startswith("#")]
        assert listed == segments, (name, text)
        extinf = [float(v) for v in re.findall(r"#EXTINF:([\d.]+),", text)]
        for segment, duration in zip(segments, extinf):
            part = probe.decode_all(path.parent / segment)
            assert abs(duration - part.video_duration_s) <= FRAME_S, (name, segment, duration, part.video_duration_s)
    return decoded


def start_node(data_dir, rtp_range, log, moto_server, oss_server):
    return NodeProcess(data_dir, free_port(), rtp_range, log, extra_args=storage_args(moto_server, oss_server)).start()


def start_recording(node, room, moto_server, bucket, tmp_path, duration_s):
    """Four tasks recording one RTP stream, once their files hold 5.5 s: (stream location,
    task ids by name, the publisher process)."""
    spec = PublisherSpec(duration_s=duration_s)
    location, targets = publish(node, room, "cam", spec)
    tasks = {name: node.ok("StartRecord", body)["TaskId"]
             for name, body in task_bodies(room, moto_server, bucket).items()}
    publisher, spec = run_publisher(spec, targets, tmp_path)
    node.wait_task(tasks["mp4-disk"], lambda d: d["RecordFiles"] and d["RecordFiles"][0]["Duration"] >= 5500)
    return location, tasks, publisher


def check_first_files(node, room, tasks, moto_server, bucket, tmp_path) -> list[float]:
    """Each task's first file, once settled (check_settled); how long each decodes to."""
    stored = Stored(node, moto_server, bucket, tmp_path)
    bodies = task_bodies(room, moto_server, bucket)
    decoded = []
    for name, task_id in tasks.items():
        data = node.wait_task(task_id, lambda d: d["RecordFiles"][0]["Status"] == 3, timeout=SETTLE_TIMEOUT_S)
        folder = bodies[name]["RecordOutputParams"]["OutputFolder"]
        decoded.append(check_settled(stored, name, folder, data["RecordFiles"][0]))
    return decoded


def test_a_node_killed_mid_recording_reports_what_is_stored(moto_server, oss_server, s3_bucket, tmp_path):
    rtp_range = free_udp_range(20)
    first = start_node(tmp_path / "data", rtp_range, tmp_path / "a.log", moto_server, oss_server)
    try:
        location, tasks, publisher = start_recording(first, "settle-node", moto_server, s3_bucket, tmp_path, 20.0)
        worker = first.stream_stats(location)["WorkerPid"]
        first.process.kill()  # SIGKILL: the worker finishes its files with no one to tell
        first.process.wait(10)
        publisher.kill()
    finally:
        first.stop()
    wait_until(lambda: not alive(worker), timeout=10)
    second = start_node(tmp_path / "data", rtp_range, tmp_path / "b.log", moto_server, oss_server)
    try:
        decoded = check_first_files(second, "settle-node", tasks, moto_server, s3_bucket, tmp_path)
        assert min(decoded) > 5.5  # what was recorded after the last progress report counts too
    finally:
        second.stop()


def test_a_killed_worker_leaves_files_that_report_what_is_stored(moto_server, oss_server, s3_bucket, tmp_path):
    node = start_node(tmp_path / "data", free_udp_range(20), tmp_path / "n.log", moto_server, oss_server)
    try:
        location, tasks, publisher = start_recording(node, "settle-worker", moto_server, s3_bucket, tmp_path, 14.0)
        os.kill(node.stream_stats(location)["WorkerPid"], signal.SIGKILL)  # no trailer, no final playlist
        assert min(check_first_files(node, "settle-worker", tasks, moto_server, s3_bucket, tmp_path)) > 4.0
        publisher.kill()
    finally:
        node.stop()
