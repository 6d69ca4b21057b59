"""Trust boundaries of outbound connections: a CallbackUrl or a StorageParams.EndPoint
never makes the node reach a network it refuses, however the address is written or
wherever a redirect points, and a refused or unreachable EndPoint always gets the
same answer. Real node processes, real HTTP receivers on 127.0.0.0/8, moto's S3."""

import socket
import time

import pytest

from engine.egress import ENDPOINT_UNREACHABLE
from testkit.node import NodeProcess, start_record_body
from testkit.ports import free_port, free_udp_range
from tests.helpers.hit_counter import HitCounter

# 127.0.0.1 is refused to callbacks and to EndPoints; 127.0.0.2 is allowed to both
GUARDED_ARGS = ("--callback-deny", "127.0.0.1/32", "--callback-retries", "0",
                "--storage-endpoint-allow", "127.0.0.2/32")


@pytest.fixture(scope="module")
def operator_receiver():
    """The node's own --callback-url, in the refused network: never checked at StartRecord."""
    receiver = HitCounter("127.0.0.1")
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def guarded_node(tmp_path_factory, operator_receiver):
    base = tmp_path_factory.mktemp("guarded-node")
    process = NodeProcess(base / "data", free_port(), free_udp_range(20), base / "node.log",
                          extra_args=(*GUARDED_ARGS, "--callback-url", operator_receiver.url())).start()
    yield process
    process.stop()


@pytest.fixture
def denied_receiver():
    receiver = HitCounter("127.0.0.1")
    yield receiver
    receiver.close()


def with_callback(room, url):
    body = start_record_body(room)
    body["RecordOutputParams"]["CallbackUrl"] = url
    return body


def wait_until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never met"
        time.sleep(0.05)


def closed_port(host: str) -> int:
    with socket.create_server((host, 0)) as server:
        return server.getsockname()[1]


@pytest.mark.parametrize("url", ["http://[::ffff:169.254.169.254]/", "http://169.254.169.254/latest/meta-data/",
                                 "http://[64:ff9b::a9fe:a9fe]/", "http://[fd00:ec2::254]/"])
def test_cloud_metadata_is_refused_by_default(node, url):
    answer = node.call("StartRecord", with_callback("egress-metadata", url))
    assert answer["Code"] == 300000004 and "CallbackUrl" in answer["Message"], answer


@pytest.mark.parametrize("host", ["[::ffff:127.0.0.1]", "0.0.0.0", "[::]", "127.0.0.1", "localhost",
                                  "2130706433", "[::ffff:7f00:1]"])
def test_every_spelling_of_a_refused_address_is_refused(guarded_node, denied_receiver, host):
    answer = guarded_node.call("StartRecord", with_callback("egress-spelling", denied_receiver.url(host)))
    assert answer["Code"] == 300000004 and "CallbackUrl" in answer["Message"], answer
    assert denied_receiver.hits == 0


@pytest.mark.parametrize("status", [302, 307])
@pytest.mark.parametrize("target_host", ["127.0.0.1", "127.0.0.2"])
def test_redirects_are_not_followed(guarded_node, status, target_host):
    """Into a refused network (127.0.0.1) or not: a 3xx is a failed delivery."""
    target = HitCounter(target_host)
    redirector = HitCounter("127.0.0.2", status=status, location=target.url())
    try:
        room = f"egress-redirect-{status}-{target_host}"
        task_id = guarded_node.ok("StartRecord", with_callback(room, redirector.url()))["TaskId"]
        guarded_node.ok("StopRecord", {"TaskId": task_id})  # events 7, 1, 5 follow at once
        wait_until(lambda: redirector.hits == 3)  # one attempt each (--callback-retries 0)
        assert target.hits == 0
    finally:
        redirector.close()
        target.close()


def test_delivery_checks_the_address_it_connects_to(guarded_node, operator_receiver):
    """A URL that passed no StartRecord check (the node's default) is refused on connect."""
    task_id = guarded_node.ok("StartRecord", start_record_body("egress-default-url"))["TaskId"]
    guarded_node.ok("StopRecord", {"TaskId": task_id})
    wait_until(lambda: sum("callback_address_refused" in line and task_id in line
                           for line in guarded_node.logs().splitlines()) == 3)
    assert operator_receiver.hits == 0


def s3_compatible(room, moto_server, bucket, endpoint):
    body = start_record_body(room)
    body["StorageParams"] = {"Vendor": 10, "Bucket": bucket, "EndPoint": endpoint,
                             "AccessKeyId": moto_server.access_key_id,
                             "AccessKeySecret": moto_server.access_key_secret}
    return body


def test_an_endpoint_in_a_refused_network_gets_the_neutral_answer(guarded_node, moto_server, s3_bucket,
                                                                  denied_receiver):
    """A real bucket (moto), a web server and a closed port on loopback: one answer, nothing reached."""
    endpoints = [moto_server.endpoint, denied_receiver.url(), f"http://127.0.0.1:{closed_port('127.0.0.1')}",
                 moto_server.endpoint.replace("127.0.0.1", "[::ffff:127.0.0.1]"),
                 moto_server.endpoint.replace("127.0.0.1", "0.0.0.0"),
                 moto_server.endpoint.replace("http://127.0.0.1", "localhost")]
    answers = [guarded_node.call("StartRecord", s3_compatible("egress-ep", moto_server, s3_bucket, e))
               for e in endpoints]
    assert {(a["Code"], a["Message"]) for a in answers} == {(300000004, ENDPOINT_UNREACHABLE)}, answers
    assert denied_receiver.hits == 0


def test_an_open_and_a_closed_port_answer_alike_where_endpoints_are_allowed(guarded_node, moto_server, s3_bucket):
    """127.0.0.2 is allowed: a web server that is not a bucket and a closed port get the same answer."""
    web = HitCounter("127.0.0.2", status=404)
    try:
        answers = [guarded_node.call("StartRecord", s3_compatible("egress-open", moto_server, s3_bucket, e))
                   for e in (web.url(), f"http://127.0.0.2:{closed_port('127.0.0.2')}")]
        assert web.hits >= 1  # the node did reach it: the policy allowed it
    finally:
        web.close()
    assert answers[0] == {**answers[1], "RequestId": answers[0]["RequestId"]}
    assert (answers[0]["Code"], answers[0]["Message"]) == (300000004, ENDPOINT_UNREACHABLE)
