"""Bad input over the real HTTP API of a real node: every request, signed or not,
gets the API's own answer in the envelope, never an internal error (300010000),
a 5xx or a traceback in the log. Known cases first, then a property-based fuzz
over the query string and every action's body."""

from __future__ import annotations

import copy
import json
import time
import urllib.parse

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from engine.auth import sign, signed_params
from testkit.node import APP_ID, SERVER_SECRET, NodeProcess, start_record_body
from testkit.ports import free_port, free_udp_range

INTERNAL_ERROR = 300010000
NETWORK_VENDORS = (1, 2, 3, 10)  # their StartRecord probes the bucket over the network


class Log:
    """The node's log from where the last look stopped."""

    def __init__(self, node: NodeProcess):
        self._path = node.log_path
        self._offset = 0

    def new_lines(self) -> str:
        with open(self._path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        return data.decode(errors="replace")


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """A node that can reach nothing outside 127.0.0.1 whatever a fuzzed StartRecord
    asks: network vendors go to a closed local port, CallbackUrl hosts are not
    resolved (no deny list)."""
    base = tmp_path_factory.mktemp("input-node")
    closed_port = free_port()
    overrides = [arg for vendor in NETWORK_VENDORS
                 for arg in ("--storage-endpoint", f"{vendor}=http://127.0.0.1:{closed_port}")]
    process = NodeProcess(base / "data", free_port(), free_udp_range(20), base / "node.log",
                          extra_args=(*overrides, "--callback-deny", "")).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def log(node) -> Log:
    return Log(node)


def answer_of(node: NodeProcess, log: Log, query: str, body: bytes) -> dict:
    """POST, and check what every answer must be: the envelope, HTTP 200, no internal error logged."""
    answer = node.post_action(query, body)
    lines = log.new_lines()
    assert "api_internal_error" not in lines and "Traceback" not in lines, lines[-3000:]
    assert answer.status == 200, answer
    envelope = answer.json()
    assert set(envelope) == {"Code", "Message", "RequestId", "Data"}, envelope
    assert envelope["Code"] != INTERNAL_ERROR, envelope
    return envelope


def encode(params: dict[str, str]) -> str:
    # surrogatepass: a lone surrogate goes out as its (invalid) UTF-8 bytes
    return "&".join(f"{urllib.parse.quote(k.encode('utf-8', 'surrogatepass'))}="
                    f"{urllib.parse.quote(v.encode('utf-8', 'surrogatepass'))}" for k, v in params.items())


def fresh_params(action: str) -> dict[str, str]:
    return signed_params(action, APP_ID, SERVER_SECRET)


def signed(action: str, **fields: str) -> str:
    """A signed query; fields replace parameters before signing, as a client sending them would."""
    params = {**fresh_params(action), **fields}
    params["Signature"] = sign(params["AppId"], params["SignatureNonce"], SERVER_SECRET, params["Timestamp"])
    return encode(params)


def json_body(value) -> bytes:
    return json.dumps(value).encode()  # ensure_ascii: a lone surrogate becomes the escape \ud800


def start_with(change) -> bytes:
    body = start_record_body("input-room")
    change(body)
    return json_body(body)


NOW = int(time.time())
ARABIC_APP_ID = "".join(chr(0x660 + int(digit)) for digit in str(APP_ID))  # int() reads it as APP_ID
CASES = {
    "Timestamp of 400 digits": (
        lambda: signed("DescribeTasks", Timestamp="9" * 400), b"{}", 100000003, "Timestamp"),
    "AppId ² (isdigit, not int)": (
        lambda: signed("DescribeTasks", AppId="\u00b2"), b"{}", 100000001, "AppId"),
    "AppId in Arabic-Indic digits": (
        lambda: signed("DescribeTasks", AppId=ARABIC_APP_ID), b'{"Status": 2}', 100000001, "AppId"),
    "Timestamp with underscores": (
        lambda: signed("DescribeTasks", Timestamp=f"{NOW:_}"), b'{"Status": 2}', 100000003, "Timestamp"),
    "Signature not ASCII": (
        lambda: encode({**fresh_params("DescribeTasks"), "Signature": "\u00e9" * 32}), b"{}", 100000005,
        "Signature"),
    "TaskId a lone surrogate": (
        lambda: signed("StopRecord"), b'{"TaskId": "\\ud800"}', 300000004, "TaskId"),
    "RoomId a lone surrogate": (
        lambda: signed("StartRecord"), start_with(lambda b: b.update(RoomId="room\ud800")), 300000004, "RoomId"),
    "Bucket a lone surrogate": (
        lambda: signed("StartRecord"), start_with(lambda b: b["StorageParams"].update(Bucket="\udc00")),
        300000004, "StorageParams.Bucket"),
    "JSON nested 100000 deep": (
        lambda: signed("StopRecord"), b"[" * 100_000 + b"]" * 100_000, 100000012, "nested too deeply"),
    "CallbackUrl unclosed IPv6": (
        lambda: signed("StartRecord"),
        start_with(lambda b: b["RecordOutputParams"].update(CallbackUrl="http://[::1/")),
        300000004, "RecordOutputParams.CallbackUrl"),
    "CallbackUrl port 99999": (
        lambda: signed("StartRecord"),
        start_with(lambda b: b["RecordOutputParams"].update(CallbackUrl="http://127.0.0.1:99999/cb")),
        300000004, "RecordOutputParams.CallbackUrl port"),
    "RecordStreamList of 2000": (
        lambda: signed("StartRecord"),
        start_with(lambda b: b["RecordInputParams"].update(
            RecordStreamList=[{"StreamId": f"s{i}"} for i in range(2000)])),
        300000004, "RecordInputParams.RecordStreamList must have at most 50 entries"),
    "body over 1 MiB": (
        lambda: signed("DescribeTasks"), b'{"Status": 2, "Pad": "' + b"x" * (1 << 20) + b'"}', 100000012,
        "larger than 1048576 bytes"),
}


@pytest.mark.parametrize("case", CASES)
def test_known_bad_input_gets_the_api_code_naming_the_field(node, log, case):
    make_query, body, code, named = CASES[case]
    envelope = answer_of(node, log, make_query(), body)
    assert envelope["Code"] == code and named in envelope["Message"], envelope


def test_a_listed_stream_limit_body_is_still_accepted(node, log):
    body = start_record_body("limit-room")
    body["RecordInputParams"]["RecordStreamList"] = [{"StreamId": f"s{i}"} for i in range(50)]
    envelope = answer_of(node, log, signed("StartRecord"), json_body(body))
    assert envelope["Code"] == 0, envelope
    assert node.ok("StopRecord", {"TaskId": envelope["Data"]["TaskId"]}) == {}


# The fuzz. One field at a time (so each reaches its parser with the rest valid),
# whole bodies, and the query string; signed calls get a fresh nonce each.
FUZZ = settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
ISDIGIT = [c for c in map(chr, range(0x110000)) if c.isdigit()]  # '²' and '١' too: int() takes some of them
TOKENS = ["", "\ud800", "\udfff", "\x00", "a\n", " 1", "+1", "-1", "1_0", "0x10", "1e3", "NaN", "9" * 400,
          "\u00b2", "\u0661", "\ufeff", "%00", "../", "A" * 16]
chars = st.characters() | st.characters(categories=["Cs"]) | st.sampled_from(ISDIGIT) | st.sampled_from("0_+- ")
# st.text() never yields a lone surrogate, whatever its alphabet: join the characters instead
texts = st.lists(chars, max_size=24).map("".join) | st.sampled_from(TOKENS)
numberish = (st.lists(st.sampled_from(ISDIGIT) | st.sampled_from("0123456789_+- "), min_size=1, max_size=12)
             .map("".join) | st.integers(min_value=-(10**500), max_value=10**500).map(str))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12)
SIGNING = ["Action", "AppId", "SignatureNonce", "Timestamp", "Signature", "SignatureVersion"]


def valid_bodies(callback_url: str) -> dict[str, dict]:
    start = start_record_body("fuzz-room")
    start["RecordInputParams"].update(RecordStreamList=[{"StreamId": "s1"}], MaxIdleTime=30, MaxRecordTime=600,
                                      FillBlank=False)
    start["RecordOutputParams"].update(OutputFileRule=1, FragmentSeconds=15, RealtimeUploadFragment=False,
                                       ShortFragmentPath=False, CallbackUrl=callback_url)
    start["StorageParams"].update(Region="", EndPoint="")
    now_ms = int(time.time() * 1000)
    describe = {"Status": 2, "RoomId": "fuzz-room", "PageOffset": 1, "PageSize": 10,
                "StartTime": now_ms - 60_000, "EndTime": now_ms}
    task = {"TaskId": "A" * 16}
    return {"StartRecord": start, "DescribeTasks": describe, "StopRecord": task, "DescribeRecordStatus": task,
            "PauseRecord": task, "ResumeRecord": task}


def value_for(key: str, callback_url: str) -> st.SearchStrategy:
    if key == "Vendor":  # no bucket probes over the network (they would also go to a closed port)
        return json_values.filter(lambda v: not (type(v) is int and v in NETWORK_VENDORS))
    if key == "CallbackUrl":
        # Whatever the node takes goes to the test's receiver (nothing is left to
        # retry at shutdown); the rest have malformed hosts or ports, nothing to resolve.
        good_port = str(urllib.parse.urlsplit(callback_url).port)
        taken = st.sampled_from([callback_url, f"http://u:p@127.0.0.1:{good_port}/cb"])
        bad_ports = st.sampled_from(["0", "65536", "99999", "-1", "x", "1_0", "\u0661"]) | st.integers(
            min_value=65536).map(str)
        bad = (st.builds("http://127.0.0.1:{}/cb".format, bad_ports)
               | st.builds("{}://{}:{}/cb".format, st.sampled_from(["http", "https", "ftp"]),
                           st.sampled_from(["[::1", "::1]", "[127.0.0.1]", ""]), bad_ports | texts))
        return texts | json_values | taken | bad
    return texts | json_values | numberish


def key_paths(value, prefix=()):
    if isinstance(value, dict):
        for key, inner in value.items():
            yield (*prefix, key)
            yield from key_paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from key_paths(inner, (*prefix, index))


def replaced(body: dict, path: tuple, value) -> dict:
    """body with the field at path set to value (DROP: removed)."""
    body = copy.deepcopy(body)
    parent = body
    for step in path[:-1]:
        parent = parent[step]
    if value is DROP:
        parent.pop(path[-1], None)
    else:
        parent[path[-1]] = value
    return body


DROP = object()
FIELDS = [(action, path) for action, body in valid_bodies("").items()
          for path in [*key_paths(body), ("ClientTaskId",) if action == "StartRecord" else ("Unknown",)]]


def call_signed(node, log, action: str, body: bytes) -> dict:
    envelope = answer_of(node, log, signed(action), body)
    event(f"Code {envelope['Code']}")
    if envelope["Code"] == 0 and action == "StartRecord":  # a ClientTaskId may name a task already stopped
        node.call("StopRecord", {"TaskId": envelope["Data"]["TaskId"]})
    return envelope


@pytest.mark.parametrize("action, path", FIELDS, ids=[f"{a}:{'.'.join(map(str, p))}" for a, p in FIELDS])
@FUZZ
@given(data=st.data())
def test_fuzzed_field_of_a_signed_call(node, log, receiver, action, path, data):
    value = data.draw(st.just(DROP) | value_for(str(path[-1]), receiver.url), label="value")
    call_signed(node, log, action, json_body(replaced(valid_bodies(receiver.url)[action], path, value)))


@pytest.mark.parametrize("action", list(valid_bodies("")))
@FUZZ
@given(body=st.binary(max_size=64) | json_values.map(json_body))
def test_fuzzed_body_of_a_signed_call(node, log, action, body):
    call_signed(node, log, action, body)


@pytest.mark.parametrize("key", SIGNING)
@FUZZ
@given(value=texts | numberish | st.just(None))
def test_fuzzed_query_parameter(node, log, key, value):
    """One parameter of a signed query replaced (any text, invalid UTF-8 included) or dropped (None)."""
    params = {k: v for k, v in {**fresh_params("DescribeTasks"), key: value}.items() if v is not None}
    event(f"Code {answer_of(node, log, encode(params), b'{\"Status\": 2}')['Code']}")


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(SIGNING) | texts, texts | numberish | st.none(), max_size=4))
def test_fuzzed_query_string(node, log, changes):
    params = {k: v for k, v in {**fresh_params("DescribeTasks"), **changes}.items() if v is not None}
    event(f"Code {answer_of(node, log, encode(params), b'{\"Status\": 2}')['Code']}")
