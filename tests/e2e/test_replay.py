"""A signed call cannot be replayed after the node restarts: used nonces are kept
in the store for twice the signature window."""

import json

from engine.auth import signed_query
from testkit.node import APP_ID, SERVER_SECRET, NodeProcess, start_record_body
from testkit.ports import free_port, free_udp_range


def test_a_replayed_start_record_is_refused_after_a_restart(tmp_path):
    node = NodeProcess(tmp_path / "data", free_port(), free_udp_range(20), tmp_path / "node.log")
    room = "replay-room"
    query = signed_query("StartRecord", APP_ID, SERVER_SECRET)
    body = json.dumps(start_record_body(room)).encode()
    node.start()
    try:
        first = node.post_action(query, body).json()
        assert first["Code"] == 0, first
        assert node.post_action(query, body).json()["Code"] == 100000005  # the same run
    finally:
        assert node.stop() == 0
    node.start()  # same data directory, same port: the very same URL
    try:
        replay = node.post_action(query, body).json()
        assert replay["Code"] == 100000005 and "SignatureNonce already used" in replay["Message"], replay
        listed = [task["TaskId"] for status in (2, 3)
                  for task in node.ok("DescribeTasks", {"Status": status, "RoomId": room})["TaskList"]]
        assert listed == [first["Data"]["TaskId"]]
        fresh = node.call("StartRecord", start_record_body(room))  # a new nonce is served as usual
        assert fresh["Code"] == 0, fresh
    finally:
        node.stop()
    assert "api_internal_error" not in node.logs()
