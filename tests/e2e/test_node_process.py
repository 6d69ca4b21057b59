"""The `recnode serve` process itself, as an operator meets it: bad configuration,
a port already in use, secrets in its environment, and CPU admission next to
other busy processes."""

from __future__ import annotations

import math
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from engine import defaults
from engine.capacity import CPU_SMOOTHING
from testkit.node import REPO, SERVER_SECRET, NodeProcess, http, start_record_body
from testkit.ports import free_port, free_udp_range
from testkit.rtp import PublisherSpec, offer_sdp

from .conftest import CALLBACK_SECRET

RECNODE = Path(sys.executable).parent / "recnode"


def run_serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`recnode serve` that is expected to exit (a node that starts instead is killed after the timeout)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RECNODE_")}
    environment.update({"RECNODE_PORT": str(free_port()), **(env or {})})
    return subprocess.run([str(RECNODE), "serve", "--data-dir", str(tmp_path / "data"), *args],
                          env=environment, cwd=REPO, capture_output=True, text=True, timeout=20)


def assert_one_line_naming(done: subprocess.CompletedProcess, option: str, env_name: str) -> str:
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr and "node_ready" not in done.stderr + done.stdout, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert option in lines[0] and env_name in lines[0], lines[0]
    return lines[0]


# configuration

@pytest.mark.parametrize(("args", "env", "option", "env_name", "said"), [
    ((), {"RECNODE_PORT": "abc"}, "--port", "RECNODE_PORT", "'abc'"),
    (("--port", "70000"), {}, "--port", "RECNODE_PORT", "'70000'"),
    (("--log-level", "verbose"), {}, "--log-level", "RECNODE_LOG_LEVEL", "'verbose'"),
    ((), {"RECNODE_SPOOL_MAX_BYTES": "10 gigs"}, "--spool-max-bytes", "RECNODE_SPOOL_MAX_BYTES", "'10 gigs'"),
    (("--cpu-cap", "lots"), {}, "--cpu-cap", "RECNODE_CPU_CAP", "'lots'"),
    ((), {"RECNODE_DRAIN_TIMEOUT": "-1"}, "--drain-timeout", "RECNODE_DRAIN_TIMEOUT", "'-1'"),
    ((), {"RECNODE_CALLBACK_DENY": "10.0.0.0/33"}, "--callback-deny", "RECNODE_CALLBACK_DENY", "'10.0.0.0/33'"),
    ((), {"RECNODE_TEST_LIMITS": "maybe"}, "--test-limits", "RECNODE_TEST_LIMITS", "'maybe'"),
], ids=["env-port", "port-range", "log-level", "size", "cpu-cap", "drain-timeout", "networks", "switch"])
def test_a_bad_value_is_one_line_naming_the_option_and_its_variable(tmp_path, args, env, option, env_name, said):
    line = assert_one_line_naming(run_serve(tmp_path, *args, env=env), option, env_name)
    assert line.startswith("recnode serve: ") and said in line


def test_a_port_in_use_is_one_line_and_the_node_never_says_it_is_ready(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_serve(tmp_path, "--port", str(port), env={"RECNODE_SERVER_SECRET": SERVER_SECRET})
    line = assert_one_line_naming(done, "--port", "RECNODE_PORT")
    assert str(port) in line and "in use" in line


def test_sizes_take_units_as_the_readme_writes_them(tmp_path):
    """`10 GiB` (the README's own spelling of the default) starts a node."""
    node = NodeProcess(tmp_path / "data", free_port(), free_udp_range(10), tmp_path / "n.log",
                       extra_env={"RECNODE_SPOOL_MAX_BYTES": "10 GiB"}, extra_args=("--log-level", "DEBUG")).start()
    try:
        ready = [line for line in node.logs().splitlines() if '"node_ready"' in line]
        listening = [line for line in node.logs().splitlines() if '"listening"' in line]
        assert len(ready) == 1 and len(listening) == 1
    finally:
        assert node.stop() == 0


# secrets

def environ_of(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/<pid>/environ is Linux's")
def test_secrets_are_gone_from_every_process_environment_and_still_work(tmp_path, receiver):
    ingest_token = "ingest-token-5d1e77"
    node = NodeProcess(tmp_path / "data", free_port(), free_udp_range(10), tmp_path / "n.log",
                       extra_env={"RECNODE_CALLBACK_SECRET": CALLBACK_SECRET, "RECNODE_INGEST_TOKEN": ingest_token},
                       extra_args=("--callback-url", receiver.url)).start()
    bearer = {"Authorization": f"Bearer {ingest_token}"}
    try:
        answer = node.publish("env-room", "cam", offer_sdp(PublisherSpec(), True, True), headers=bearer)
        assert answer.status == 201, answer
        stats = http("GET", answer.headers["Location"], headers=bearer).json()
        worker = psutil.Process(stats["WorkerPid"])
        processes = {node.process.pid, worker.pid, worker.ppid(),
                     *(p.pid for p in psutil.Process(node.process.pid).children(recursive=True))}
        assert len(processes) >= 3  # the node, the worker template, a worker
        for pid in processes:
            environ = environ_of(pid)
            for secret in (SERVER_SECRET, CALLBACK_SECRET, ingest_token):
                assert secret.encode() not in environ, (pid, psutil.Process(pid).cmdline())
        # The node still has them: signed calls are verified, callbacks signed, publishing guarded.
        task_id = node.ok("StartRecord", start_record_body("env-room"))["TaskId"]
        assert node.call("DescribeTasks", {}, secret="not-the-secret")["Code"] == 100000005
        assert node.publish("env-room", "other", offer_sdp(PublisherSpec(), True, True)).status == 401
        node.ok("StopRecord", {"TaskId": task_id})
        got = receiver.wait_for(task_id, lambda events: events[-1:] == [5])
        assert got and all(r.signature_ok for r in got)
        assert SERVER_SECRET not in node.logs() and ingest_token not in node.logs()
    finally:
        assert node.stop() == 0


# CPU admission

def test_busy_processes_outside_the_node_do_not_make_it_refuse_work(tmp_path):
    """The default --cpu-cap, with every core the node may use kept busy by other processes."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
               for _ in os.sched_getaffinity(0)]
    node = None
    try:
        deadline = time.monotonic() + 10
        while sum(p.cpu_times().user for p in map(psutil.Process, (b.pid for b in burners))) < 0.2 * len(burners):
            assert time.monotonic() < deadline, "the burners never ran"
            time.sleep(0.05)
        node = NodeProcess(tmp_path / "data", free_port(), free_udp_range(10), tmp_path / "n.log",
                           cpu_cap=None).start(timeout=60)
        # Long enough for the node's CPU average to reach 90 % of any step in what it measures.
        samples = math.ceil(math.log(0.1) / math.log(1 - CPU_SMOOTHING)) + 1
        time.sleep(samples * defaults.TICK_S)
        metrics = http("GET", node.base_url + "/metrics").body.decode()
        cpu = float(re.search(r"^recnode_cpu_utilization (\S+)$", metrics, re.M).group(1))
        assert cpu < defaults.CPU_CAP, metrics
        answer = node.publish("cpu-room", "cam", offer_sdp(PublisherSpec(), True, True))
        assert answer.status == 201, (answer, node.logs()[-2000:])
        started = node.call("StartRecord", start_record_body("cpu-room"))
        assert started["Code"] == 0, started
        assert "refused" not in node.logs()
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
        if node is not None:
            node.stop()
