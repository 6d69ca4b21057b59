"""Node configuration: command line first, then RECNODE_* environment, then
defaults (engine.options), into one frozen NodeConfig."""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from secrets import token_hex

from contract import tuning
from engine import defaults, options
from engine.models import Limits

SERVER_SECRET_FILE = "server-secret"


@dataclass(frozen=True)
class NodeConfig:
    data_dir: Path
    app_id: int
    server_secret: str = field(repr=False)
    host: str = defaults.HTTP_HOST
    port: int = defaults.HTTP_PORT
    advertised_address: str = "127.0.0.1"
    rtp_bind_host: str = "0.0.0.0"
    rtp_port_range: tuple[int, int] = defaults.RTP_PORT_RANGE
    ingest_token: str = field(default="", repr=False)
    local_storage_enabled: bool = True
    log_level: str = "info"
    worker_ready_timeout_s: float = defaults.WORKER_READY_TIMEOUT_S
    jitter_max_wait_s: float = tuning.JITTER_MAX_WAIT_S
    sync_wait_for_sr_s: float = tuning.SYNC_WAIT_FOR_SR_S
    rtp_inactivity_timeout_s: float = defaults.RTP_INACTIVITY_TIMEOUT_S
    rtp_pin_source: bool = False  # plain RTP: media only from the host that announced the stream
    rtp_require_srtp: bool = False  # plain RTP: refuse offers that are not SRTP (SDES)
    callback_url: str = ""  # default receiver of status callbacks
    callback_secret: str = field(default="", repr=False)
    callback_retries: int = defaults.CALLBACK_RETRIES
    callback_retry_interval_s: float = defaults.CALLBACK_RETRY_INTERVAL_S
    storage_endpoints: tuple[tuple[int, str], ...] = ()  # Vendor -> endpoint override (gateways, tests)
    spool_max_bytes: int = defaults.SPOOL_MAX_BYTES
    drain_timeout_s: float = defaults.DRAIN_TIMEOUT_S
    webrtc_hosts: tuple[str, ...] = ("127.0.0.1",)
    webrtc_ports: tuple[int, int] | None = None
    whip_cors_origin: str = "*"
    advertised_url: str = ""  # the node's base URL for clients; "" = http://<advertised_address>:<port>
    recording_url_ttl_s: float = defaults.RECORDING_URL_TTL_S
    console_token: str = field(default="", repr=False)  # logs in to /console besides the ServerSecret
    finalize_mp4: bool = False  # finished MP4s on the node's disk rewritten faststart
    max_streams: int = 0  # 0: measured default for this machine (engine.capacity)
    max_tasks: int = defaults.MAX_TASKS
    cpu_cap: float = defaults.CPU_CAP
    callback_deny: tuple[str, ...] = defaults.CALLBACK_DENY_NETWORKS
    storage_endpoint_allow: tuple[str, ...] = ()  # networks a caller's EndPoint may reach though refused
    store_url: str = field(default="", repr=False)  # '': the data directory's SQLite file; may hold a password
    node_id: str = ""  # its rows in a shared store (from_args: the host name unless given)
    node_lease_s: float = defaults.NODE_LEASE_S  # engine.fleet
    room_affinity: bool = False  # publishes redirected to the node holding the room (engine.placement)
    mp4_audio: str = defaults.MP4_AUDIO_DEFAULT  # "opus" kept as sent, or "aac"
    # Test configuration: lowers the API's minimums and the event cadences so a
    # suite runs in minutes. The defaults are the contract.
    test_limits: bool = False

    @property
    def limits(self) -> Limits:
        if self.test_limits:
            return Limits(defaults.TEST_MAX_IDLE_TIME_RANGE, defaults.TEST_MAX_RECORD_TIME_RANGE)
        return Limits()

    @property
    def stream_missing_event_s(self) -> float:
        return defaults.TEST_EVENT_INTERVAL_S if self.test_limits else defaults.STREAM_MISSING_EVENT_S

    @property
    def room_empty_event_s(self) -> float:
        return defaults.TEST_EVENT_INTERVAL_S if self.test_limits else defaults.ROOM_EMPTY_EVENT_S

    @property
    def base_url(self) -> str:
        """Where clients reach this node's HTTP API (links it hands out start with it)."""
        if self.advertised_url:
            return self.advertised_url
        host = self.advertised_address
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    @property
    def store_path(self) -> Path:
        return self.data_dir / defaults.STORE_FILENAME

    @property
    def store_location(self) -> Path | str:
        """What engine.store.Store opens: --store-url, else the data directory's SQLite file."""
        return self.store_url or self.store_path

    @property
    def storage_root(self) -> Path:
        return self.data_dir / defaults.STORAGE_DIRNAME

    @property
    def spool_root(self) -> Path:
        return self.data_dir / defaults.SPOOL_DIRNAME


def stored_server_secret(data_dir: Path) -> str:
    """The secret kept in the data directory, created (mode 0600) on first use, so a
    node runs with no configuration at all and still never accepts unsigned calls."""
    path = data_dir / SERVER_SECRET_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token_hex(16) + "\n")
    return path.read_text().strip()


def from_args(args: argparse.Namespace, secrets: dict[str, str]) -> NodeConfig:
    """The node's configuration from parsed `serve` arguments, the environment and
    `secrets` (engine.secret_env); a bad value raises ConfigError naming its option."""
    v = options.resolve(args, options.SERVE_OPTIONS, secrets)
    data_dir = Path(v["data_dir"]).resolve()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        server_secret = v["server_secret"] or stored_server_secret(data_dir)
    except OSError as error:
        raise options.ConfigError(f"--data-dir / RECNODE_DATA_DIR: cannot use {str(data_dir)!r}: "
                                  f"{error.strerror or error}") from None
    return NodeConfig(
        data_dir=data_dir,
        app_id=v["app_id"],
        server_secret=server_secret,
        host=v["host"],
        port=v["port"],
        advertised_address=v["advertised_address"],
        rtp_bind_host=v["rtp_bind_host"],
        rtp_port_range=v["rtp_ports"],
        ingest_token=v["ingest_token"],
        local_storage_enabled=not v["disable_local_storage"],
        log_level=v["log_level"],
        rtp_inactivity_timeout_s=v["rtp_timeout"],
        rtp_pin_source=v["rtp_pin_source"],
        rtp_require_srtp=v["rtp_require_srtp"],
        callback_url=v["callback_url"],
        callback_secret=v["callback_secret"] or server_secret,
        callback_retries=v["callback_retries"],
        callback_retry_interval_s=v["callback_retry_interval"],
        storage_endpoints=v["storage_endpoint"],
        spool_max_bytes=v["spool_max_bytes"],
        drain_timeout_s=v["drain_timeout"],
        webrtc_hosts=v["webrtc_hosts"],
        webrtc_ports=v["webrtc_ports"],
        whip_cors_origin=v["whip_cors_origin"],
        advertised_url=v["advertised_url"],
        recording_url_ttl_s=v["recording_url_ttl"],
        console_token=v["console_token"],
        finalize_mp4=v["finalize_mp4"],
        max_streams=v["max_streams"],
        max_tasks=v["max_tasks"],
        cpu_cap=v["cpu_cap"],
        callback_deny=v["callback_deny"],
        storage_endpoint_allow=v["storage_endpoint_allow"],
        store_url=v["store_url"],
        node_id=v["node_id"] or socket.gethostname(),
        node_lease_s=v["node_lease"],
        room_affinity=v["room_affinity"],
        mp4_audio=v["mp4_audio"],
        test_limits=v["test_limits"],
    )
