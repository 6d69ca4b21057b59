"""The options of `recnode serve`: one table, each option with its environment
variable, its default and the check its value must pass.

A value comes from the command line, else from the environment, else the
default, and is checked the same way whichever it came from: a bad one is a
ConfigError naming both spellings (`--port / RECNODE_PORT: ...`), which the
CLI prints as one line before exiting with status 2.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from engine import defaults


class ConfigError(Exception):
    """A configuration value the node cannot run with; the message is the whole explanation."""


# value checks: text in, typed value out, ValueError(reason) for a bad value

def text(value: str) -> str:
    return value


def port(value: str) -> int:
    if not (value.strip().isascii() and value.strip().isdigit()) or not 1 <= int(value) <= 65535:
        raise ValueError(f"{value!r} is not a port number (1-65535)")
    return int(value)


def _integer(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a whole number") from None


def at_least(minimum: int) -> Callable[[str], int]:
    def check(value: str) -> int:
        number = _integer(value)
        if number < minimum:
            raise ValueError(f"{value!r} is below {minimum}")
        return number

    return check


def seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number of seconds") from None
    if not 0 <= number < float("inf"):
        raise ValueError(f"{value!r} is not a number of seconds (0 or more)")
    return number


def positive_seconds(value: str) -> float:
    number = seconds(value)
    if number == 0:
        raise ValueError("must be more than 0 seconds")
    return number


_SIZE = re.compile(r"(\d+(?:\.\d*)?)\s*([KMGT]?)(?:I?B)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def size(value: str) -> int:
    """Bytes: a number with an optional unit, all powers of 1024 (K, M, G, T; KiB,
    MiB, ...; KB, MB, ... mean the same), so '10G', '10GiB' and '10 GiB' agree."""
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a size (bytes, or a number with K, M, G or T: 10G, 500MiB)")
    number = int(Decimal(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])  # exact, however long
    if number < 1:
        raise ValueError(f"{value!r} is not a size above 0 bytes")
    return number


def share(value: str) -> float:
    """A share as a fraction (0.85) or a percentage (85%)."""
    body, percent = (value[:-1], True) if value.strip().endswith("%") else (value, False)
    try:
        number = float(body) / (100 if percent else 1)
    except ValueError:
        raise ValueError(f"{value!r} is not a share (0.85 or 85%)") from None
    if not 0 < number < float("inf"):
        raise ValueError(f"{value!r} is not a share above 0")
    return number


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def mp4_audio(value: str) -> str:
    if value.strip().lower() not in defaults.MP4_AUDIO_CODECS:
        raise ValueError(f"{value!r} is not an MP4 audio codec ({' or '.join(defaults.MP4_AUDIO_CODECS)})")
    return value.strip().lower()


def log_level(value: str) -> str:
    if value.lower() not in LOG_LEVELS:
        raise ValueError(f"{value!r} is not a log level ({', '.join(LOG_LEVELS)})")
    return value.lower()


def port_range(value: str) -> tuple[int, int]:
    try:
        low, high = (int(part) for part in value.split("-", 1))
    except ValueError:
        raise ValueError(f"expected MIN-MAX, got {value!r}") from None
    if not 1024 <= low < high <= 65535:
        raise ValueError(f"{value!r} is not a range inside 1024-65535")
    return low, high


def optional_port_range(value: str) -> tuple[int, int] | None:
    return port_range(value) if value else None


def _items(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def addresses(value: str) -> tuple[str, ...]:
    items = _items(value)
    for item in items:
        try:
            ipaddress.ip_address(item)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address") from None
    if not items:
        raise ValueError("at least one address is needed")
    return items


def networks(value: str) -> tuple[str, ...]:
    items = _items(value)
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not a network (address/prefix)") from None
    return items


def storage_endpoints(values: list[str]) -> tuple[tuple[int, str], ...]:
    endpoints = []
    for value in values:
        vendor, _, url = value.partition("=")
        if not vendor.strip().isdigit() or not url.startswith(("http://", "https://")):
            raise ValueError(f"expected VENDOR=http(s)://host[:port], got {value!r}")
        endpoints.append((int(vendor), url))
    return tuple(endpoints)


def store_url(value: str) -> str:
    """'' (the data directory's SQLite file) or a URL engine.store.url reads; the
    error never repeats the value (it may hold a password)."""
    from engine.store.url import parse

    if value.strip():
        parse(value)
    return value.strip()


_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")


def node_id(value: str) -> str:
    """'' (the host name) or a name like one: letters, digits, '.', '_', '-'."""
    if value.strip() and not _NODE_ID.fullmatch(value.strip()):
        raise ValueError(f"{value!r} is not a node id (up to 253 letters, digits, '.', '_' or '-')")
    return value.strip()


def base_url(value: str) -> str:
    """An http(s) URL without a query, or empty (the default applies); no trailing '/'."""
    if not value:
        return ""
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.query or parsed.fragment:
        raise ValueError(f"{value!r} is not an http(s)://host[:port][/path] URL")
    return value.rstrip("/")


def switch(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("", "0", "false", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not on or off (1/true/yes/on or 0/false/no/off)")


@dataclass(frozen=True)
class Option:
    flag: str
    env: str
    check: Callable[[Any], Any]
    default: str
    help: str = ""
    kind: str = "value"  # "value"; "switch" (a flag without a value); "list" (repeatable, comma-separated in env)
    secret: bool = False  # its environment variable is read through engine.secret_env, never echoed
    shown: str = ""  # the default as --help describes it, when the value itself says too little

    @property
    def default_text(self) -> str:
        if self.shown:
            return self.shown
        if self.kind == "switch":
            return "off"
        return self.default or "none"

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")

    @property
    def names(self) -> str:
        return f"{self.flag} / {self.env}"


def _o(flag: str, env: str, check: Callable[[Any], Any], default: Any, help: str = "", **extra: Any) -> Option:
    return Option(flag, env, check, str(default), help, **extra)


SERVE_OPTIONS: tuple[Option, ...] = (
    _o("--host", "RECNODE_HOST", text, defaults.HTTP_HOST, "HTTP listen address"),
    _o("--port", "RECNODE_PORT", port, defaults.HTTP_PORT, "HTTP port"),
    _o("--data-dir", "RECNODE_DATA_DIR", text, defaults.DATA_DIR, "state, generated secret, node-disk storage"),
    _o("--store-url", "RECNODE_STORE_URL", store_url, "",
       "where the node's state lives: sqlite:///<path> or postgresql://user:password@host:port/db, which "
       "a fleet of nodes shares (default: <data-dir>/recnode.sqlite3; prefer the environment: it holds a password)",
       secret=True),
    _o("--node-id", "RECNODE_NODE_ID", node_id, "",
       "this node's name in a fleet sharing a store: it resumes the tasks, streams and uploads of this name "
       "(default: the host name)"),
    _o("--node-lease", "RECNODE_NODE_LEASE", positive_seconds, defaults.NODE_LEASE_S,
       "seconds after which a node of a fleet that stopped renewing its lease is gone (its streams no longer "
       "count in their rooms)"),
    _o("--room-affinity", "RECNODE_ROOM_AFFINITY", switch, "",
       "answer a publish with 307 to the live node of the fleet that already holds a stream of its room "
       "(when that node has room), so a room is recorded on one node", kind="switch"),
    _o("--app-id", "RECNODE_APP_ID", at_least(0), defaults.APP_ID, "the AppId clients sign with"),
    _o("--server-secret", "RECNODE_SERVER_SECRET", text, "",
       "API signing secret (prefer the environment: a command line is visible to other users)", secret=True,
       shown="generated once into <data-dir>/server-secret"),
    _o("--advertised-address", "RECNODE_ADVERTISED_ADDRESS", text, "127.0.0.1", "the address put in SDP answers"),
    _o("--rtp-bind-host", "RECNODE_RTP_BIND_HOST", text, "0.0.0.0", "where workers bind their UDP sockets"),
    _o("--rtp-ports", "RECNODE_RTP_PORTS", port_range, "%d-%d" % defaults.RTP_PORT_RANGE,
       "UDP port range for RTP ingest, MIN-MAX"),
    _o("--ingest-token", "RECNODE_INGEST_TOKEN", text, "", "bearer token for publishing", secret=True,
       shown="none: publishing needs no token"),
    _o("--disable-local-storage", "RECNODE_DISABLE_LOCAL_STORAGE", switch, "", "refuse Vendor 0", kind="switch"),
    _o("--log-level", "RECNODE_LOG_LEVEL", log_level, "info", "debug, info, warning, error or critical"),
    _o("--rtp-timeout", "RECNODE_RTP_TIMEOUT", positive_seconds, defaults.RTP_INACTIVITY_TIMEOUT_S,
       "seconds without RTP after which a stream has left its room"),
    _o("--rtp-pin-source", "RECNODE_RTP_PIN_SOURCE", switch, "",
       "take a plain-RTP stream's media only from the host that announced it (not for SFUs that send "
       "from other hosts)", kind="switch"),
    _o("--rtp-require-srtp", "RECNODE_RTP_REQUIRE_SRTP", switch, "",
       "refuse plain-RTP offers that are not SRTP (RTP/SAVP with a=crypto) with 400", kind="switch"),
    _o("--callback-url", "RECNODE_CALLBACK_URL", text, "",
       "default receiver of status callbacks (a task's CallbackUrl wins)", shown="none"),
    _o("--callback-secret", "RECNODE_CALLBACK_SECRET", text, "", "signs callbacks",
       secret=True, shown="the server secret"),
    _o("--callback-retries", "RECNODE_CALLBACK_RETRIES", at_least(0), defaults.CALLBACK_RETRIES,
       "retries after a failed callback delivery"),
    _o("--callback-retry-interval", "RECNODE_CALLBACK_RETRY_INTERVAL", positive_seconds,
       defaults.CALLBACK_RETRY_INTERVAL_S, "seconds before the first retry (then doubling)"),
    _o("--storage-endpoint", "RECNODE_STORAGE_ENDPOINTS", storage_endpoints, "",
       "send a Vendor's requests to this endpoint, VENDOR=URL (repeatable)", kind="list",
       shown="none: each vendor's own endpoint"),
    _o("--spool-max-bytes", "RECNODE_SPOOL_MAX_BYTES", size, defaults.SPOOL_MAX_BYTES,
       "disk the upload spool may use (bytes, or 500M, 10G: units are powers of 1024)", shown="10G"),
    _o("--drain-timeout", "RECNODE_DRAIN_TIMEOUT", seconds, defaults.DRAIN_TIMEOUT_S,
       "on SIGTERM, seconds to finish uploads and callbacks before exiting"),
    _o("--callback-deny", "RECNODE_CALLBACK_DENY", networks, ",".join(defaults.CALLBACK_DENY_NETWORKS),
       "comma-separated networks CallbackUrl may not point into ('' allows all); every delivery is checked"),
    _o("--storage-endpoint-allow", "RECNODE_STORAGE_ENDPOINT_ALLOW", networks, "",
       "comma-separated networks a StorageParams.EndPoint may point into although refused", shown="none"),
    _o("--webrtc-hosts", "RECNODE_WEBRTC_HOSTS", addresses, "127.0.0.1",
       "comma-separated local addresses WebRTC offers as ICE host candidates (no STUN)"),
    _o("--webrtc-ports", "RECNODE_WEBRTC_PORTS", optional_port_range, "",
       "UDP port range for WebRTC (ICE), MIN-MAX", shown="any"),
    _o("--whip-cors-origin", "RECNODE_WHIP_CORS_ORIGIN", text, "*", "Access-Control-Allow-Origin for WHIP"),
    _o("--advertised-url", "RECNODE_ADVERTISED_URL", base_url, "",
       "the node's base URL as clients reach it: Vendor 0 FileUrl and the console's links",
       shown="http://<advertised address>:<port>"),
    _o("--console-token", "RECNODE_CONSOLE_TOKEN", text, "",
       "a token that logs in to the web console at /console (the ServerSecret always does)", secret=True,
       shown="none: the ServerSecret logs in"),
    _o("--finalize-mp4", "RECNODE_FINALIZE_MP4", switch, "",
       "rewrite each finished MP4 on the node's disk (Vendor 0) as faststart MP4 (moov first, real "
       "durations; the packets copied, not re-encoded), for players and editors that dislike fragmented MP4",
       kind="switch"),
    _o("--recording-url-ttl", "RECNODE_RECORDING_URL_TTL", positive_seconds, defaults.RECORDING_URL_TTL_S,
       "seconds a signed Vendor 0 FileUrl stays valid after it is handed out"),
    _o("--max-streams", "RECNODE_MAX_STREAMS", at_least(0), 0,
       "published streams this node takes (0: the measured default for the cores it may use)", shown="0"),
    _o("--max-tasks", "RECNODE_MAX_TASKS", at_least(1), defaults.MAX_TASKS, "active tasks this node takes"),
    _o("--cpu-cap", "RECNODE_CPU_CAP", share, defaults.CPU_CAP,
       "share (0.85 or 85%%) of the CPU the node may use (its cgroup quota, else its cores) above which "
       "it answers busy; counts the node and its workers only"),
    _o("--mp4-audio", "RECNODE_MP4_AUDIO", mp4_audio, defaults.MP4_AUDIO_DEFAULT,
       "audio in MP4 files: opus (as sent) or aac (transcoded: QuickTime, older Safari and editors play it)"),
    _o("--test-limits", "RECNODE_TEST_LIMITS", switch, "",
       "FOR TESTS ONLY: lower MaxIdleTime/MaxRecordTime minimums and event cadences", kind="switch"),
)

OPTIONS_BY_FLAG = {option.flag: option for option in SERVE_OPTIONS}


def add_arguments(parser: argparse.ArgumentParser, options: Iterable[Option]) -> None:
    """Every option takes its text as given (checked later by `resolve`, with the environment)."""
    for option in options:
        # argparse formats help with %: a literal one is doubled
        help_text = f"{option.help} (env {option.env}; default: {option.default_text.replace('%', '%%')})"
        if option.kind == "switch":
            parser.add_argument(option.flag, action="store_true", default=None, help=help_text)
        elif option.kind == "list":
            parser.add_argument(option.flag, action="append", default=None, metavar="VALUE", help=help_text)
        else:
            parser.add_argument(option.flag, default=None, metavar="VALUE", help=help_text)


def _given(option: Option, args: argparse.Namespace, secrets: dict[str, str]) -> Any:
    given = getattr(args, option.dest)
    if given is not None:
        return "1" if given is True else given
    from_env = secrets.get(option.env, "") if option.secret else os.environ.get(option.env, "")
    if option.kind == "list":
        return [item for item in from_env.split(",") if item] if from_env else []
    return from_env or option.default


def resolve(args: argparse.Namespace, options: Iterable[Option], secrets: dict[str, str]) -> dict[str, Any]:
    """{dest: checked value} for each option: command line, else environment, else default."""
    values = {}
    for option in options:
        try:
            values[option.dest] = option.check(_given(option, args, secrets))
        except ValueError as error:
            raise ConfigError(f"{option.names}: {error}") from None
    return values
