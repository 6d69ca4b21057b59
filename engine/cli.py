"""`recnode`: one binary. `serve` runs the node (the service mode); workers are
forked from its template process (the worker mode, workers.main.entry)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

import structlog
from aiohttp import web

from engine import config as config_module
from engine import defaults
from engine.api import Api
from engine.auth import signed_query
from engine.node import RecordingNode
from workers.logs import configure_logging

log = structlog.get_logger("cli")


async def serve(config: config_module.NodeConfig, started: asyncio.Event | None = None) -> None:
    node = RecordingNode(config)
    await node.start()
    runner = web.AppRunner(Api(node).app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    log.info("listening", host=config.host, port=config.port, data_dir=str(config.data_dir))
    stop, force = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        (force if stop.is_set() else stop).set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    if started is not None:
        started.set()
    await stop.wait()
    # Draining: no new tasks or streams; recordings finish their files; uploads and
    # callbacks get until the deadline. A second signal (or the deadline) cuts it short.
    log.info("draining", deadline_s=config.drain_timeout_s)
    draining = loop.create_task(node.stop(config.drain_timeout_s))
    forced = loop.create_task(force.wait())
    await asyncio.wait([draining, forced], timeout=config.drain_timeout_s + 5,
                       return_when=asyncio.FIRST_COMPLETED)
    if not draining.done():
        log.warning("forced_exit", pending_uploads=node.uploader.backlog if node.uploader else 0)
        node.kill_workers()  # their files keep every fragment written; the spool keeps the rest
        draining.cancel()
    forced.cancel()
    await runner.cleanup()
    log.info("stopped")


def cmd_serve(args: argparse.Namespace) -> int:
    config = config_module.from_args(args)
    configure_logging(config.log_level, secrets=(config.server_secret, config.ingest_token))
    asyncio.run(serve(config))
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    secret = config_module.pop_secret_env().get("RECNODE_SERVER_SECRET") or args.server_secret
    if not secret:
        path = Path(args.data_dir) / config_module.SERVER_SECRET_FILE
        if not path.exists():
            print(f"no secret: set RECNODE_SERVER_SECRET or start the node once to create {path}", file=sys.stderr)
            return 2
        secret = path.read_text().strip()
    print(f"{args.base_url.rstrip('/')}/?{signed_query(args.action, args.app_id, secret)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.demo import run_demo

    configure_logging("warning")
    return asyncio.run(run_demo())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recnode", description="self-hosted cloud recording node")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the recording node")
    config_module.add_serve_arguments(serve_parser)
    serve_parser.set_defaults(func=cmd_serve)
    sign_parser = commands.add_parser("sign", help="print a signed API URL for curl")
    sign_parser.add_argument("action")
    sign_parser.add_argument("--base-url", default="http://127.0.0.1:8080")
    sign_parser.add_argument("--app-id", type=int, default=int(config_module._env("RECNODE_APP_ID", "1")))
    sign_parser.add_argument("--server-secret", default=None)
    sign_parser.add_argument("--data-dir", default=config_module._env("RECNODE_DATA_DIR", defaults.DATA_DIR),
                             help="where `serve` keeps its generated secret")
    sign_parser.set_defaults(func=cmd_sign)
    demo_parser = commands.add_parser("demo", help="record a synthetic stream in every format, print what was written")
    demo_parser.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
