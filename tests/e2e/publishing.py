"""Publishing from e2e tests: announce over HTTP, send RTP from a publisher process."""

import json
import time
from dataclasses import replace

from testkit.rtp import offer_sdp, parse_answer, start_publisher


def publish(node, room, stream, spec, sprop=True):
    answer = node.publish(room, stream, offer_sdp(spec, True, True, sprop=sprop), user_id=f"user-{stream}")
    assert answer.status == 201, answer
    assert answer.headers["Content-Type"].startswith("application/sdp")
    return answer.headers["Location"], parse_answer(answer.body.decode())


def run_publisher(spec, targets, tmp_path, name="manifest"):
    spec = replace(spec.with_targets(targets), manifest_path=str(tmp_path / f"{name}.pkl"))
    process = start_publisher(spec)
    return process, spec


def stop_and_describe(node, task_id):
    node.ok("StopRecord", {"TaskId": task_id})
    return node.wait_task(task_id, lambda d: d["RecordFiles"] and all(f["Status"] == 3 for f in d["RecordFiles"]))


def worker_line(node, room, event: str, timeout=30.0) -> dict:
    """The first `event` line a worker of the room wrote to the node's log (its stderr)."""
    deadline = time.monotonic() + timeout
    while True:
        for line in node.logs().splitlines():
            if f'"{event}"' in line and f'"{room}"' in line:
                entry = json.loads(line)
                if entry["event"] == event and entry.get("room_id") == room:
                    return entry
        assert time.monotonic() < deadline, f"no {event} for room {room} in the node's log"
        time.sleep(0.1)


def worker_exit(node, room, timeout=30.0) -> dict:
    """The `worker_exit` line the room's worker wrote when it ended."""
    return worker_line(node, room, "worker_exit", timeout)
