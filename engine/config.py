"""Node configuration: command line first, then RECNODE_* environment, then defaults."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from secrets import token_hex

from contract import tuning
from engine import defaults
from engine.models import Limits

# Secrets are removed from os.environ once read, so that no child process
# (the worker template and every worker forked from it) inherits them.
SERVER_SECRET_FILE = "server-secret"
SECRET_ENV = ("RECNODE_SERVER_SECRET", "RECNODE_INGEST_TOKEN", "RECNODE_CALLBACK_SECRET")


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
    max_streams: int = 0  # 0: measured default for this machine (engine.capacity)
    max_tasks: int = defaults.MAX_TASKS
    cpu_cap: float = defaults.CPU_CAP
    callback_deny: tuple[str, ...] = defaults.CALLBACK_DENY_NETWORKS
    storage_endpoint_allow: tuple[str, ...] = ()  # networks a caller's EndPoint may reach though refused
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
    def store_path(self) -> Path:
        return self.data_dir / defaults.STORE_FILENAME

    @property
    def storage_root(self) -> Path:
        return self.data_dir / defaults.STORAGE_DIRNAME

    @property
    def spool_root(self) -> Path:
        return self.data_dir / defaults.SPOOL_DIRNAME


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    e = _env
    parser.add_argument("--host", default=e("RECNODE_HOST", defaults.HTTP_HOST))
    parser.add_argument("--port", type=int, default=int(e("RECNODE_PORT", str(defaults.HTTP_PORT))))
    parser.add_argument("--data-dir", default=e("RECNODE_DATA_DIR", defaults.DATA_DIR))
    parser.add_argument("--app-id", type=int, default=int(e("RECNODE_APP_ID", str(defaults.APP_ID))))
    parser.add_argument(
        "--server-secret",
        default=None,
        help="API signing secret (prefer RECNODE_SERVER_SECRET: a command line is visible to other users)",
    )
    parser.add_argument("--advertised-address", default=e("RECNODE_ADVERTISED_ADDRESS", "127.0.0.1"))
    parser.add_argument("--rtp-bind-host", default=e("RECNODE_RTP_BIND_HOST", "0.0.0.0"))
    parser.add_argument(
        "--rtp-ports",
        default=e("RECNODE_RTP_PORTS", "%d-%d" % defaults.RTP_PORT_RANGE),
        help="UDP port range for RTP ingest, MIN-MAX",
    )
    parser.add_argument("--ingest-token", default=None, help="bearer token for publishing (or RECNODE_INGEST_TOKEN)")
    parser.add_argument(
        "--disable-local-storage",
        action="store_true",
        default=e("RECNODE_DISABLE_LOCAL_STORAGE", "") in ("1", "true", "yes"),
    )
    parser.add_argument("--log-level", default=e("RECNODE_LOG_LEVEL", "info"))
    parser.add_argument("--rtp-timeout", type=float,
                        default=float(e("RECNODE_RTP_TIMEOUT", str(defaults.RTP_INACTIVITY_TIMEOUT_S))),
                        help="seconds without RTP after which a stream has left its room")
    parser.add_argument("--callback-url", default=e("RECNODE_CALLBACK_URL", ""),
                        help="default receiver of status callbacks (a task's CallbackUrl wins)")
    parser.add_argument("--callback-secret", default=None, help="signs callbacks (or RECNODE_CALLBACK_SECRET)")
    parser.add_argument("--callback-retries", type=int,
                        default=int(e("RECNODE_CALLBACK_RETRIES", str(defaults.CALLBACK_RETRIES))))
    parser.add_argument("--callback-retry-interval", type=float,
                        default=float(e("RECNODE_CALLBACK_RETRY_INTERVAL", str(defaults.CALLBACK_RETRY_INTERVAL_S))))
    parser.add_argument("--storage-endpoint", action="append",
                        default=[v for v in e("RECNODE_STORAGE_ENDPOINTS", "").split(",") if v],
                        metavar="VENDOR=URL", help="send a Vendor's requests to this endpoint (repeatable)")
    parser.add_argument("--spool-max-bytes", type=int,
                        default=int(e("RECNODE_SPOOL_MAX_BYTES", str(defaults.SPOOL_MAX_BYTES))),
                        help="disk the upload spool may use before recordings fail (quit_reason 1004)")
    parser.add_argument("--drain-timeout", type=float,
                        default=float(e("RECNODE_DRAIN_TIMEOUT", str(defaults.DRAIN_TIMEOUT_S))),
                        help="on SIGTERM, seconds to finish uploads and callbacks before exiting")
    parser.add_argument("--callback-deny", default=e("RECNODE_CALLBACK_DENY", ",".join(defaults.CALLBACK_DENY_NETWORKS)),
                        help="comma-separated networks CallbackUrl may not point into ('' allows all)")
    parser.add_argument("--storage-endpoint-allow", default=e("RECNODE_STORAGE_ENDPOINT_ALLOW", ""),
                        help="comma-separated networks a StorageParams.EndPoint may point into although refused")
    parser.add_argument("--webrtc-hosts", default=e("RECNODE_WEBRTC_HOSTS", "127.0.0.1"),
                        help="comma-separated local addresses WebRTC offers as ICE host candidates (no STUN)")
    parser.add_argument("--webrtc-ports", default=e("RECNODE_WEBRTC_PORTS", ""),
                        help="UDP port range for WebRTC (ICE), MIN-MAX; default: any")
    parser.add_argument("--whip-cors-origin", default=e("RECNODE_WHIP_CORS_ORIGIN", "*"),
                        help="Access-Control-Allow-Origin for WHIP (pages on other origins publish)")
    parser.add_argument("--max-streams", type=int, default=int(e("RECNODE_MAX_STREAMS", "0")),
                        help="published streams this node takes (0: the measured default for its cores)")
    parser.add_argument("--max-tasks", type=int, default=int(e("RECNODE_MAX_TASKS", str(defaults.MAX_TASKS))))
    parser.add_argument("--cpu-cap", type=float, default=float(e("RECNODE_CPU_CAP", str(defaults.CPU_CAP))),
                        help="CPU use (fraction of all cores) above which the node answers busy")
    parser.add_argument("--test-limits", action="store_true",
                        default=e("RECNODE_TEST_LIMITS", "") in ("1", "true", "yes"),
                        help="FOR TESTS ONLY: lower MaxIdleTime/MaxRecordTime minimums and event cadences")


def _port_range(text: str) -> tuple[int, int]:
    try:
        low, high = (int(part) for part in text.split("-", 1))
    except ValueError:
        raise SystemExit(f"--rtp-ports: expected MIN-MAX, got {text!r}") from None
    if not (1024 <= low < high <= 65535):
        raise SystemExit(f"--rtp-ports: {text!r} is not a range inside 1024-65535")
    return low, high


def pop_secret_env() -> dict[str, str]:
    """Read and remove the secret variables from this process's environment."""
    return {name: os.environ.pop(name) for name in SECRET_ENV if name in os.environ}


def stored_server_secret(data_dir: Path) -> str:
    """The secret kept in the data directory, created (mode 0600) on first use, so a
    node runs with no configuration at all and still never accepts unsigned calls."""
    path = data_dir / SERVER_SECRET_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token_hex(16) + "\n")
    return path.read_text().strip()


def from_args(args: argparse.Namespace) -> NodeConfig:
    secrets = pop_secret_env()
    data_dir = Path(args.data_dir).resolve()
    server_secret = args.server_secret or secrets.get("RECNODE_SERVER_SECRET", "") or stored_server_secret(data_dir)
    return NodeConfig(
        data_dir=data_dir,
        app_id=args.app_id,
        server_secret=server_secret,
        host=args.host,
        port=args.port,
        advertised_address=args.advertised_address,
        rtp_bind_host=args.rtp_bind_host,
        rtp_port_range=_port_range(args.rtp_ports),
        ingest_token=args.ingest_token or secrets.get("RECNODE_INGEST_TOKEN", ""),
        local_storage_enabled=not args.disable_local_storage,
        log_level=args.log_level,
        rtp_inactivity_timeout_s=args.rtp_timeout,
        callback_url=args.callback_url,
        callback_secret=args.callback_secret or secrets.get("RECNODE_CALLBACK_SECRET", "") or server_secret,
        callback_retries=args.callback_retries,
        callback_retry_interval_s=args.callback_retry_interval,
        storage_endpoints=tuple(_storage_endpoint(v) for v in args.storage_endpoint),
        spool_max_bytes=args.spool_max_bytes,
        drain_timeout_s=args.drain_timeout,
        webrtc_hosts=tuple(h.strip() for h in args.webrtc_hosts.split(",") if h.strip()),
        webrtc_ports=_port_range(args.webrtc_ports) if args.webrtc_ports else None,
        whip_cors_origin=args.whip_cors_origin,
        max_streams=args.max_streams,
        max_tasks=args.max_tasks,
        cpu_cap=args.cpu_cap,
        callback_deny=tuple(n.strip() for n in args.callback_deny.split(",") if n.strip()),
        storage_endpoint_allow=tuple(n.strip() for n in args.storage_endpoint_allow.split(",") if n.strip()),
        test_limits=args.test_limits,
    )


def _storage_endpoint(text: str) -> tuple[int, str]:
    vendor, _, url = text.partition("=")
    if not vendor.strip().isdigit() or not url.startswith(("http://", "https://")):
        raise SystemExit(f"--storage-endpoint: expected VENDOR=http(s)://host[:port], got {text!r}")
    return int(vendor), url
