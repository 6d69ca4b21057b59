"""Pulling from e2e tests: POST /pull, watch the source's state, end it; and what every
pulled recording is checked against (the test clip, looped, from its first frame)."""

from __future__ import annotations

import json
import re
import time
import urllib.parse

from testkit import bitstream
from testkit.media import make_test_media
from testkit.node import NodeProcess, http


def pull(node: NodeProcess, room: str, stream: str, body: dict, headers: dict | None = None):
    url = f"{node.base_url}/pull/{urllib.parse.quote(room, safe='')}/{urllib.parse.quote(stream, safe='')}" \
          f"?UserId=u-{stream}"
    return http("POST", url, json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})})


def pull_ok(node: NodeProcess, room: str, stream: str, body: dict) -> str:
    answer = pull(node, room, stream, body)
    assert answer.status == 201, answer
    return answer.headers["Location"]


def source_state(location: str, headers: dict | None = None) -> dict:
    answer = http("GET", location, headers=headers)
    assert answer.status == 200, answer
    return answer.json()


def wait_source(location: str, predicate, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = source_state(location)
        if predicate(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"source state never matched: {state}")
        time.sleep(0.1)


def workers(node: NodeProcess) -> int:
    text = http("GET", node.base_url + "/metrics").body.decode()
    return int(float(re.search(r"^recnode_workers (\S+)$", text, re.M).group(1)))


def clip_slices(clip_s: float, loops: int = 20) -> list[bytes]:
    """The slice NAL units of the clip the test servers send, looped, from frame 0."""
    media = make_test_media(duration_s=clip_s)
    return bitstream.h264_slice_nals_from_aus([au.data for au in media.video] * loops)
