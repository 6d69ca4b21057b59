"""The outbound-address policy: normalisation, and the check on the address a socket
really connects to (real sockets on 127.0.0.0/8)."""

import asyncio
import socket

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver

from engine import defaults, egress
from engine.errors import InvalidParameter
from tests.helpers.hit_counter import HitCounter

LOOPBACK_DENIED = egress.EgressPolicy(egress.parse_networks(["127.0.0.1/32"], "test"))


@pytest.mark.parametrize("address, reaches", [
    ("::ffff:169.254.169.254", "169.254.169.254"),
    ("::ffff:127.0.0.1", "127.0.0.1"),
    ("64:ff9b::a9fe:a9fe", "169.254.169.254"),  # NAT64
    ("::7f00:1", "127.0.0.1"),  # IPv4-compatible
    ("0.0.0.0", "127.0.0.1"),  # Linux connects the unspecified address to loopback
    ("0.1.2.3", "127.0.0.1"),
    ("::", "::1"),
    ("::ffff:0.0.0.0", "127.0.0.1"),
    ("fe80::1%eth0", "fe80::1"),
    ("::1", "::1"),
    ("93.184.216.34", "93.184.216.34"),
])
def test_addresses_are_judged_by_what_they_reach(address, reaches):
    assert str(egress.normalise(address)) == reaches


def test_the_default_lists():
    callbacks = egress.callback_policy(defaults.CALLBACK_DENY_NETWORKS)
    for address in ("169.254.169.254", "::ffff:169.254.169.254", "100.100.100.200", "fd00:ec2::254"):
        assert callbacks.refuses(address), address
    assert not callbacks.refuses("127.0.0.1") and not callbacks.refuses("10.1.2.3")
    endpoints = egress.endpoint_policy(defaults.CALLBACK_DENY_NETWORKS, [])
    for address in ("127.0.0.1", "0.0.0.0", "::", "::ffff:10.0.0.1", "192.168.1.1", "172.31.0.1", "fc00::1",
                    "100.64.0.1", "169.254.169.254"):
        assert endpoints.refuses(address), address
    assert not endpoints.refuses("52.216.0.1")  # a public address (S3's)
    allowed = egress.endpoint_policy(defaults.CALLBACK_DENY_NETWORKS, ["10.0.0.0/8", "::ffff:127.0.0.0/104"])
    assert not allowed.refuses("10.9.9.9") and not allowed.refuses("0.0.0.0") and allowed.refuses("192.168.1.1")


def test_the_two_loopback_addresses_are_one_host():
    assert LOOPBACK_DENIED.refuses("::1") and LOOPBACK_DENIED.refuses("::")
    assert not LOOPBACK_DENIED.refuses("127.0.0.2")
    assert egress.EgressPolicy(egress.parse_networks(["::1/128"], "test")).refuses("0.0.0.0")


def test_a_bad_network_names_its_option():
    with pytest.raises(ValueError, match="--storage-endpoint-allow: 'ten' is not an IP network"):
        egress.endpoint_policy([], ["ten"])


@pytest.fixture
def listener():
    """A TCP listener on 127.0.0.1 that counts the connections it accepts."""
    server = socket.create_server(("127.0.0.1", 0))
    yield server
    server.close()


def accepted(server: socket.socket) -> int:
    """Connections waiting in the backlog: a connect() that returned has put its own there."""
    server.setblocking(False)
    count = 0
    while True:
        try:
            server.accept()[0].close()
            count += 1
        except BlockingIOError:
            return count


@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::ffff:127.0.0.1"),
                                          (socket.AF_INET, "0.0.0.0")])
def test_a_refused_address_is_never_connected(listener, family, host):
    try:
        socket.socket(family).close()
    except OSError:
        pytest.skip("no IPv6 on this host")
    port = listener.getsockname()[1]
    with egress.enforced(LOOPBACK_DENIED), socket.socket(family) as sock:
        with pytest.raises(egress.EgressRefused):
            sock.connect((host, port))
    assert accepted(listener) == 0
    with socket.socket(family) as sock:  # outside the policy: the same connect works
        sock.connect((host, port))
    assert accepted(listener) == 1


def test_blocking_clients_in_a_thread_are_checked(listener):
    port = listener.getsockname()[1]

    async def main():
        with egress.enforced(LOOPBACK_DENIED):  # to_thread carries the policy into the thread
            return await asyncio.to_thread(lambda: socket.create_connection(("localhost", port), timeout=2))

    with pytest.raises(OSError):
        asyncio.run(main())
    assert accepted(listener) == 0


class _Rebinding(AbstractResolver):
    """DNS whose answer changes after the first question (DNS rebinding)."""

    def __init__(self, answers: list[str]):
        self.answers = answers

    async def resolve(self, host, port=0, family=socket.AF_INET):
        address = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return [{"hostname": host, "host": address, "port": port, "family": socket.AF_INET, "proto": 0,
                 "flags": socket.AI_NUMERICHOST}]

    async def close(self):
        pass


def test_a_name_that_rebinds_into_a_refused_network_reaches_nothing():
    """The check is on the address connected to, not on an earlier resolution."""
    allowed = HitCounter("127.0.0.2")
    try:
        refused = HitCounter("127.0.0.1", allowed.port)
    except OSError:
        allowed.close()
        pytest.skip("the port is taken on 127.0.0.1")

    async def main():
        connector = aiohttp.TCPConnector(resolver=_Rebinding(["127.0.0.2", "127.0.0.1"]), force_close=True,
                                         use_dns_cache=False)
        async with aiohttp.ClientSession(connector=connector) as session:
            outcomes = []
            for _ in range(2):
                with egress.enforced(LOOPBACK_DENIED):
                    try:
                        async with session.post(f"http://receiver.test:{allowed.port}/", data=b"x") as answer:
                            outcomes.append(answer.status)
                    except aiohttp.ClientConnectorError as error:
                        outcomes.append(type(error.os_error).__name__)
            return outcomes

    try:
        assert asyncio.run(main()) == [200, "EgressRefused"]
        assert (allowed.hits, refused.hits) == (1, 0)
    finally:
        allowed.close()
        refused.close()


def test_start_record_checks_resolve_names():
    async def main():
        await egress.check_callback_url("http://localhost:9/cb", LOOPBACK_DENIED)

    with pytest.raises(InvalidParameter, match="CallbackUrl"):
        asyncio.run(main())


@pytest.mark.parametrize("endpoint", ["http://localhost:9", "localhost", "http://[::ffff:127.0.0.1]:9",
                                      "http://no-such-host.invalid", "http://[::1"])
def test_a_refused_or_unresolvable_endpoint_gets_the_neutral_answer(endpoint):
    policy = egress.endpoint_policy(defaults.CALLBACK_DENY_NETWORKS, [])
    with pytest.raises(InvalidParameter) as raised:
        asyncio.run(egress.check_endpoint(endpoint, policy))
    assert raised.value.message == egress.ENDPOINT_UNREACHABLE
