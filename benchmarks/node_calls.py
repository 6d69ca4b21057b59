"""The recording API calls a level makes beyond StartRecord: stop and wait until
durable, and which file a task is writing."""

from __future__ import annotations

import time

from testkit.node import NodeProcess, http


def stop_until_durable(node: NodeProcess, task_id: str, timeout: float = 120) -> dict:
    """StopRecord, then poll until every file of the task is durable (Status 3)."""
    began = time.monotonic()
    node.ok("StopRecord", {"TaskId": task_id})
    answered = time.monotonic() - began
    deadline = began + timeout
    while True:
        data = node.ok("DescribeRecordStatus", {"TaskId": task_id})
        files = data.get("RecordFiles") or []
        if files and all(f["Status"] == 3 for f in files):
            return {"stop_api_s": round(answered, 4), "durable_s": round(time.monotonic() - began, 4),
                    "files": files}
        if time.monotonic() > deadline:
            return {"stop_api_s": round(answered, 4), "durable_s": None, "files": files, "timeout": True}
        time.sleep(0.02)


def task_object_key(node: NodeProcess, task_id: str, folder: str) -> str | None:
    """The object key of the task's first file: its OutputFolder, then its FileId."""
    files = node.ok("DescribeRecordStatus", {"TaskId": task_id}).get("RecordFiles") or []
    return folder + files[0]["FileId"] if files else None


def stream_stats(node: NodeProcess, location: str) -> dict:
    """The stream's counters (GET on its Location); {"error": ...} when it is gone."""
    answer = http("GET", location if location.startswith("http") else node.base_url + location)
    if answer.status != 200:
        return {"error": f"GET {location}: {answer.status} {answer.body[:200].decode(errors='replace').strip()}"}
    return answer.json()
