"""A client of the node as a user would have one: signed API calls over HTTP and
RTP publishing, plus a fixture-friendly way to run `recnode serve` as a real process
(with this kit's own AppId and ServerSecret)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from engine.auth import signed_params

REPO = Path(__file__).resolve().parents[1]  # where `python -m engine.cli` runs from
APP_ID = 1234567
SERVER_SECRET = "test-server-secret-3b9f"
MAX_REDIRECTS = 5  # 307s followed by publish(): a node of a fleet sends a publisher on to another


@dataclass
class HttpAnswer:
    status: int
    body: bytes
    headers: dict[str, str]
    posted_to: list[str] = field(default_factory=list)  # publish(): each node's URL, 307s followed

    def json(self):
        return json.loads(self.body)


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 30) -> HttpAnswer:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return HttpAnswer(response.status, response.read(), dict(response.headers))
    except urllib.error.HTTPError as error:
        return HttpAnswer(error.code, error.read(), dict(error.headers))


@dataclass
class NodeProcess:
    data_dir: Path
    port: int
    rtp_range: tuple[int, int]
    log_path: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    extra_args: tuple[str, ...] = ()
    cpu_cap: str | None = "100"  # None: the node's own default
    process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> NodeProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECNODE_")}
        env.update({"RECNODE_SERVER_SECRET": SERVER_SECRET, "PYTHONUNBUFFERED": "1"})
        env.update(self.extra_env)
        args = [sys.executable, "-m", "engine.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "--data-dir", str(self.data_dir), "--app-id", str(APP_ID), "--advertised-address", "127.0.0.1",
                "--rtp-bind-host", "127.0.0.1", "--rtp-ports", "%d-%d" % self.rtp_range,
                # tests load this machine themselves: admission by CPU would make them flaky
                *(("--cpu-cap", self.cpu_cap) if self.cpu_cap else ()), *self.extra_args]
        self.log_file = open(self.log_path, "ab")
        self.process = subprocess.Popen(args, cwd=REPO, env=env, stdout=self.log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"node exited with {self.process.returncode}: {self.log_path.read_text()[-3000:]}")
            try:
                if http("GET", self.base_url + "/readyz", timeout=1).status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("node did not become ready")

    def stop(self, timeout: float = 30) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
        finally:
            self.log_file.close()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    # the signed API
    def call(self, action: str, body: dict, *, app_id: int = APP_ID, secret: str = SERVER_SECRET,
             timestamp: int | None = None, nonce: str | None = None, query: dict | None = None) -> dict:
        q = signed_params(action, app_id, secret, timestamp, nonce)
        if query is not None:
            q = {k: v for k, v in {**q, **query}.items() if v is not None}
        answer = self.post_action(urllib.parse.urlencode(q), json.dumps(body).encode())
        assert answer.status == 200, answer
        return answer.json()

    def post_action(self, query: str, body: bytes) -> HttpAnswer:
        """POST an API call as given: the query string already encoded, the body as bytes."""
        return http("POST", f"{self.base_url}/?{query}", body, {"Content-Type": "application/json"})

    def ok(self, action: str, body: dict) -> dict:
        answer = self.call(action, body)
        assert answer["Code"] == 0, answer
        return answer["Data"]

    # publishing
    def publish(self, room_id: str, stream_id: str, sdp: str, user_id: str | None = None,
                headers: dict | None = None, follow: bool = True) -> HttpAnswer:
        """Announce a plain-RTP stream; a 307 to another node of the fleet is followed
        (`follow`), with the same offer and headers. The answer's `posted_to`: each URL."""
        url = f"{self.base_url}/rtp/{urllib.parse.quote(room_id, safe='')}/{urllib.parse.quote(stream_id, safe='')}"
        if user_id is not None:
            url += "?" + urllib.parse.urlencode({"UserId": user_id})
        posted_to = []
        for _ in range(MAX_REDIRECTS + 1):
            posted_to.append(url)
            answer = http("POST", url, sdp.encode(), {"Content-Type": "application/sdp", **(headers or {})})
            if not follow or answer.status not in (307, 308):
                break
            url = urllib.parse.urljoin(url, answer.headers["Location"])
        answer.posted_to = posted_to
        return answer

    def _resource(self, location: str) -> str:
        return location if location.startswith("http") else self.base_url + location

    def unpublish(self, location: str, headers: dict | None = None) -> HttpAnswer:
        return http("DELETE", self._resource(location), headers=headers)

    def stream_stats(self, location: str) -> dict:
        return http("GET", self._resource(location)).json()

    def wait_task(self, task_id: str, predicate, timeout: float = 20) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            data = self.ok("DescribeRecordStatus", {"TaskId": task_id})
            if predicate(data):
                return data
            if time.monotonic() > deadline:
                raise AssertionError(f"task state never matched: {data}")
            time.sleep(0.2)


def start_record_body(room_id: str, bucket: str = "bucket", **input_over) -> dict:
    return {
        "RoomId": room_id,
        "RecordInputParams": {"RecordMode": 1, "StreamType": 3, **input_over},
        "RecordOutputParams": {"OutputFileFormat": "mp4", "OutputFolder": "rec/"},
        "StorageParams": {"Vendor": 0, "Bucket": bucket, "AccessKeyId": "AKIDEXAMPLE",
                          "AccessKeySecret": "storage-secret-9c2e"},
    }
