"""Where the node may connect on a caller's behalf: a task's CallbackUrl and its
StorageParams.EndPoint. One policy, checked on the address a socket really connects to.

Addresses are normalised before they are judged: an IPv4-mapped, IPv4-compatible
or NAT64 IPv6 address is the IPv4 address it reaches, the unspecified address
(0.0.0.0/8, ::) is the local host's loopback, which is where Linux connects it,
and 127.0.0.1 and ::1 are one host.

StartRecord resolves the URL's host and refuses it when any address is refused
(a clear answer before a task exists). That alone would let a name that resolves
elsewhere later (DNS rebinding), a redirect, or a library's own resolution slip
through, so connections made on a caller's behalf also run inside `enforced(policy)`:
an audit hook (PEP 578) on `socket.connect` refuses, in that context only, every
inet address the policy refuses, whatever library (aiohttp, boto3, oss2) and
whatever name led there. The hook sees the numeric address after DNS.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import ipaddress
import socket
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from contract.storage import StorageTarget
from engine import defaults, errors

T = TypeVar("T")
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# One answer for every EndPoint the node cannot or will not reach (a closed port, a
# timeout, a refused network, a server that does not speak the protocol), so the
# answers cannot be used to map what is behind the node.
ENDPOINT_UNREACHABLE = "StorageParams.EndPoint: the bucket cannot be reached"
CALLBACK_REFUSED = "RecordOutputParams.CallbackUrl points into a network this node refuses"

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_LOOPBACKS = (ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1"))


class EgressRefused(PermissionError):
    """A connection the policy refuses; an OSError, so every client treats it as a failed connect."""


def normalise(address: str | Address) -> Address:
    """The address a connection to `address` reaches (see the module's docstring)."""
    ip = ipaddress.ip_address(str(address).split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        elif ip.is_unspecified:
            return _LOOPBACKS[1]
    if ip in _THIS_NETWORK:
        return _LOOPBACKS[0]
    return ip


def parse_networks(texts: Iterable[str], option: str) -> tuple[Network, ...]:
    """Networks of a node option; an IPv4-mapped IPv6 network is its IPv4 network."""
    networks = []
    for text in texts:
        try:
            network = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            raise ValueError(f"{option}: {text!r} is not an IP network") from None
        mapped = network.network_address.ipv4_mapped if network.version == 6 else None
        if mapped is not None and network.prefixlen >= 96:
            network = ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}")
        networks.append(network)
    return tuple(networks)


@dataclass(frozen=True)
class EgressPolicy:
    """Refused networks, and networks allowed even where they overlap a refused one."""

    deny: tuple[Network, ...]
    allow: tuple[Network, ...] = ()

    def refuses(self, address: str | Address) -> bool:
        ip = normalise(address)
        if any(ip in network for network in self.allow):
            return False
        # 127.0.0.1 and ::1 are one host (a dual-stack service answers both): refusing one refuses the other
        same_host = _LOOPBACKS if ip in _LOOPBACKS else (ip,)
        return any(candidate in network for candidate in same_host for network in self.deny)


def callback_policy(deny: Iterable[str]) -> EgressPolicy:
    return EgressPolicy(parse_networks(deny, "--callback-deny"))


def endpoint_policy(callback_deny: Iterable[str], allow: Iterable[str]) -> EgressPolicy:
    """A caller's EndPoint: everything but the public internet is refused (the
    CallbackUrl deny list too), except the networks the operator allows."""
    deny = (*defaults.STORAGE_ENDPOINT_DENY_NETWORKS, *callback_deny)
    return EgressPolicy(parse_networks(deny, "--callback-deny"),
                        parse_networks(allow, "--storage-endpoint-allow"))


def policy_for_storage(policy: EgressPolicy | None, target: StorageTarget,
                       overrides: Mapping[int, str]) -> EgressPolicy | None:
    """The policy for the connections a bucket's adapter makes: `policy` when they go
    to the caller's EndPoint; None when they go to the vendor's own host (made from
    Region, under the vendor's domain) or to the operator's --storage-endpoint."""
    if policy is None or not target.endpoint or overrides.get(target.vendor):
        return None
    return policy


# --- StartRecord: resolve and judge before a task exists

async def _refused_addresses(host: str, policy: EgressPolicy) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos if policy.refuses(info[4][0])]


async def check_callback_url(url: str, policy: EgressPolicy) -> None:
    """Refuse a CallbackUrl whose host is, or resolves to, a refused address. A host
    that does not resolve now is let through: delivery is checked again on connect."""
    host = urllib.parse.urlsplit(url).hostname if url else None
    if not host or not policy.deny:
        return
    try:
        refused = await _refused_addresses(host, policy)
    except (OSError, ValueError):
        return
    if refused:
        raise errors.InvalidParameter(CALLBACK_REFUSED)


async def check_endpoint(endpoint: str, policy: EgressPolicy) -> None:
    """Refuse (with the neutral answer) an EndPoint whose host does not resolve or
    resolves to any refused address."""
    url = endpoint.strip() if "://" in endpoint else "https://" + endpoint.strip()
    try:
        host = urllib.parse.urlsplit(url).hostname
        if not host or await _refused_addresses(host, policy):
            raise errors.InvalidParameter(ENDPOINT_UNREACHABLE)
    except (OSError, ValueError, UnicodeError):
        raise errors.InvalidParameter(ENDPOINT_UNREACHABLE) from None


# --- every connection: the audit hook

_ACTIVE: contextvars.ContextVar[EgressPolicy | None] = contextvars.ContextVar("egress_policy", default=None)
_hook_lock = threading.Lock()
_hook_installed = False


def _audit(event: str, args: tuple) -> None:
    if event != "socket.connect":
        return
    policy = _ACTIVE.get()
    if policy is None:
        return
    sock, address = args
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    host = address[0]
    try:
        refused = policy.refuses(host)
    except ValueError:
        refused = True  # a name: connect() would resolve it out of our sight
    if refused:
        raise EgressRefused(errno.EACCES, f"the node's egress policy refuses {host}")


def _install_hook() -> None:
    global _hook_installed
    with _hook_lock:
        if not _hook_installed:
            sys.addaudithook(_audit)
            _hook_installed = True


@contextmanager
def enforced(policy: EgressPolicy | None) -> Iterator[None]:
    """Inside: every TCP/UDP connect of this thread or task (and of what it starts:
    asyncio tasks and to_thread copy the context) to a refused address raises
    EgressRefused. None enforces nothing."""
    if policy is None:
        yield
        return
    _install_hook()
    token = _ACTIVE.set(policy)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def call_enforced(policy: EgressPolicy | None, function: Callable[..., T], *args) -> T:
    """`function(*args)` under `policy`: for blocking clients run in a thread."""
    with enforced(policy):
        return function(*args)
