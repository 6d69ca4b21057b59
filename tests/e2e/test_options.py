"""Node options away from their defaults, on a real node: --disable-local-storage,
--whip-cors-origin, --callback-url; and `recnode sign` against a node."""

import os
import subprocess
import sys

import pytest

from testkit.node import APP_ID, REPO, NodeProcess, http, start_record_body
from testkit.ports import free_port, free_udp_range
from tests.e2e.conftest import CALLBACK_SECRET
from tests.e2e.test_storage import s3_body
from tests.helpers.callback_receiver import CallbackReceiver

ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def node(tmp_path_factory, moto_server, s3_bucket, receiver):
    base = tmp_path_factory.mktemp("options")
    process = NodeProcess(base / "data", free_port(), free_udp_range(20), base / "node.log",
                          extra_env={"RECNODE_CALLBACK_SECRET": CALLBACK_SECRET, "RECNODE_DISABLE_LOCAL_STORAGE": "1"},
                          extra_args=("--storage-endpoint", f"1={moto_server.endpoint}", "--whip-cors-origin", ORIGIN,
                                      "--callback-url", receiver.url)).start()
    yield process
    process.stop()


def test_vendor_0_is_refused_when_local_storage_is_disabled(node, moto_server, s3_bucket):
    answer = node.call("StartRecord", start_record_body("opt-local"))
    assert answer["Code"] == 300000004 and "Vendor 0 (node disk) is disabled" in answer["Message"], answer
    task_id = node.ok("StartRecord", s3_body("opt-local", moto_server, s3_bucket))["TaskId"]  # a bucket is fine
    node.ok("StopRecord", {"TaskId": task_id})


def test_whip_answers_carry_the_configured_origin(node):
    url = f"{node.base_url}/whip/opt-cors/cam"
    preflight = http("OPTIONS", url, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert preflight.status == 204 and preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    refused = http("POST", url, b"v=0\r\n", {"Content-Type": "application/sdp", "Origin": ORIGIN})
    assert refused.status in (400, 406) and refused.headers["Access-Control-Allow-Origin"] == ORIGIN


def test_callback_url_is_the_default_and_a_task_s_own_wins(node, moto_server, s3_bucket, receiver):
    """`receiver` is the node's --callback-url."""
    own_receiver = CallbackReceiver(CALLBACK_SECRET)
    try:
        default_task = node.ok("StartRecord", s3_body("opt-callback", moto_server, s3_bucket))["TaskId"]
        own = s3_body("opt-callback", moto_server, s3_bucket)
        own["RecordOutputParams"]["CallbackUrl"] = own_receiver.url
        own_task = node.ok("StartRecord", own)["TaskId"]
        for task_id in (default_task, own_task):
            node.ok("StopRecord", {"TaskId": task_id})
        got = receiver.wait_for(default_task, lambda e: e == [7, 1, 5])
        assert all(r.signature_ok for r in got)
        own_receiver.wait_for(own_task, lambda e: e == [7, 1, 5])
        assert receiver.of_task(own_task, delivered_only=False) == []
        assert own_receiver.of_task(default_task, delivered_only=False) == []
    finally:
        own_receiver.close()


def sign(action, node, **env):
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("RECNODE_")}
    done = subprocess.run([sys.executable, "-m", "engine.cli", "sign", action, "--base-url", node.base_url,
                           "--app-id", str(APP_ID), "--data-dir", str(node.data_dir)],
                          cwd=REPO, env={**run_env, **env}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_recnode_sign_prints_urls_the_node_accepts(tmp_path):
    """With the secret a node generated in its data directory, and with one from the environment."""
    node = NodeProcess(tmp_path / "data", free_port(), free_udp_range(10), tmp_path / "n.log",
                       extra_env={"RECNODE_SERVER_SECRET": ""}).start()  # empty: unset, so one is generated
    try:
        generated = (tmp_path / "data" / "server-secret").read_text().strip()
        urls = [sign("DescribeTasks", node), sign("DescribeTasks", node, RECNODE_SERVER_SECRET=generated)]
        assert urls[0] != urls[1]  # each with its own nonce
        for url in urls:
            answer = http("POST", url, b'{"Status": 2}', {"Content-Type": "application/json"})
            assert answer.status == 200 and answer.json()["Code"] == 0, answer
            replayed = http("POST", url, b'{"Status": 2}', {"Content-Type": "application/json"})
            assert replayed.json()["Code"] == 100000005  # a signed URL is good once
        wrong = sign("DescribeTasks", node, RECNODE_SERVER_SECRET="not-the-secret")
        assert http("POST", wrong, b'{"Status": 2}').json()["Code"] == 100000005
    finally:
        node.stop()
