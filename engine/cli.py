"""`recnode`: one binary. `serve` runs the node (the service mode); workers are
forked from its template process (the worker mode, workers.main.entry).

The node's modules (aiohttp, aiortc, av) are imported only once `serve` has its
configuration: a bad option answers at once, and the re-exec that takes secrets
out of the environment (engine.secret_env) happens before the expensive imports.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import signal
import socket
import sys
from pathlib import Path

import structlog

from engine import config as config_module
from engine import defaults, options, secret_env
from engine.auth import signed_query
from engine.store import url as store_url
from engine.version import version
from workers.logs import configure_logging

log = structlog.get_logger("cli")


def listen(host: str, port: int) -> list[socket.socket]:
    """Bind and listen on the HTTP port before the node starts: a port in use is
    found before anything runs, and `node_ready` is only logged once clients can
    connect (they wait in the backlog until the API serves them)."""
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise options.ConfigError(f"--host / RECNODE_HOST: cannot resolve {host!r}: {error.strerror}") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(addresses):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(defaults.HTTP_BACKLOG)
    except OSError as error:
        for sock in sockets:
            sock.close()
        names = "--host / RECNODE_HOST" if error.errno == errno.EADDRNOTAVAIL else "--port / RECNODE_PORT"
        raise options.ConfigError(f"{names}: cannot listen on {host}:{port}: {error.strerror}") from None
    return sockets


async def serve(config: config_module.NodeConfig, started: asyncio.Event | None = None) -> None:
    from aiohttp import web

    from engine.api import Api
    from engine.console import Console
    from engine.node import RecordingNode

    sockets = listen(config.host, config.port)
    node = await RecordingNode.create(config)
    runner = web.AppRunner(Api(node, Console(node)).app(), access_log=None)
    await runner.setup()
    for sock in sockets:
        await web.SockSite(runner, sock, backlog=defaults.HTTP_BACKLOG).start()
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
        log.warning("forced_exit", pending_uploads=node.uploader.backlog)
        node.kill_workers()  # their files keep every fragment written; the spool keeps the rest
        draining.cancel()
    forced.cancel()
    await runner.cleanup()
    log.info("stopped")


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        found = secret_env.take_secrets(reexec=getattr(args, "own_command_line", False))
        config = config_module.from_args(args, found)
        configure_logging(config.log_level,
                          secrets=(config.server_secret, config.ingest_token, config.callback_secret,
                                   config.console_token, *store_url.secrets_in(config.store_url)))
        asyncio.run(serve(config))
    except options.ConfigError as error:
        print(f"recnode serve: {error}", file=sys.stderr)
        return 2
    return 0


SIGN_OPTIONS = tuple(options.OPTIONS_BY_FLAG[flag] for flag in ("--app-id", "--server-secret", "--data-dir"))


def cmd_sign(args: argparse.Namespace) -> int:
    try:
        v = options.resolve(args, SIGN_OPTIONS, secret_env.take_secrets(reexec=False))
    except options.ConfigError as error:
        print(f"recnode sign: {error}", file=sys.stderr)
        return 2
    secret = v["server_secret"]
    if not secret:
        path = Path(v["data_dir"]) / config_module.SERVER_SECRET_FILE
        if not path.exists():
            print(f"no secret: set RECNODE_SERVER_SECRET or start the node once to create {path}", file=sys.stderr)
            return 2
        secret = path.read_text().strip()
    print(f"{args.base_url.rstrip('/')}/?{signed_query(args.action, v['app_id'], secret)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.demo import run_demo

    configure_logging("warning")
    return asyncio.run(run_demo())


def local_node_url() -> str:
    """A node on this machine, on the port `serve` would take from the environment."""
    return f"http://127.0.0.1:{os.environ.get('RECNODE_PORT') or defaults.HTTP_PORT}"


def cmd_publish(args: argparse.Namespace) -> int:
    from engine.publish import PublishError, PublishRequest, run

    request = PublishRequest(node_url=args.node, room_id=args.room, stream_id=args.stream,
                             user_id=args.user or args.stream, whip=args.whip,
                             file=Path(args.file) if args.file else None, duration_s=args.duration,
                             token=os.environ.get("RECNODE_INGEST_TOKEN", ""))
    try:
        return run(request)
    except PublishError as error:
        print(f"recnode publish: {error}", file=sys.stderr)
        return 1


def cmd_finalize(args: argparse.Namespace) -> int:
    from engine.finalize import FinalizeError, default_output, finalize

    source = Path(args.input)
    try:
        target = finalize(source, Path(args.output) if args.output else default_output(source))
    except (FinalizeError, OSError) as error:
        print(f"recnode finalize: {error}", file=sys.stderr)
        return 1
    print(target)
    return 0


def _add_finalize(commands) -> None:
    finalize = commands.add_parser(
        "finalize", help="write a faststart MP4 (moov first, real durations) from a recorded fragmented MP4",
        description="Copy every packet of a finished recording (a fragmented MP4, as the node writes them) "
                    "into an MP4 with one moov at the front, without re-encoding: for players and editors "
                    "that handle fragmented MP4 badly.")
    finalize.add_argument("input", help="a finished fragmented MP4")
    finalize.add_argument("output", nargs="?", default="",
                          help="where to write it (default: INPUT with .faststart.mp4 for .mp4)")
    finalize.set_defaults(func=cmd_finalize)


def _add_publish(commands) -> None:
    publish = commands.add_parser(
        "publish", help="send a test pattern or a media file to a node over plain RTP or WHIP",
        description="Announce a stream to a node, send a synthetic test pattern (H.264 + Opus) or a media "
                    "file to it in real time over plain RTP (default) or WHIP, then unpublish it. "
                    "A node with --ingest-token needs RECNODE_INGEST_TOKEN set here too.")
    publish.add_argument("--node", default=local_node_url(),
                         help="the node's base URL (default: %(default)s, from RECNODE_PORT like `serve`)")
    publish.add_argument("--room", default="room1", help="RoomId (default %(default)s)")
    publish.add_argument("--stream", default="stream1", help="StreamId (default %(default)s)")
    publish.add_argument("--user", default="", help="UserId (default: the StreamId)")
    publish.add_argument("--whip", action="store_true", help="publish over WHIP instead of plain RTP")
    publish.add_argument("--file", default="", help="a media file to send (default: the test pattern); "
                                                    "encoded again as H.264 + Opus")
    publish.add_argument("--duration", type=float, default=10.0,
                         help="seconds of test pattern (default %(default)s)")
    publish.set_defaults(func=cmd_publish)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recnode", description="self-hosted cloud recording node")
    parser.add_argument("--version", action="version", version=f"recnode {version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the recording node")
    options.add_arguments(serve_parser, options.SERVE_OPTIONS)
    serve_parser.set_defaults(func=cmd_serve)
    sign_parser = commands.add_parser("sign", help="print a signed API URL for curl")
    sign_parser.add_argument("action")
    sign_parser.add_argument("--base-url", default=local_node_url(),
                             help="the node (default: %(default)s, from RECNODE_PORT like `serve`)")
    options.add_arguments(sign_parser, SIGN_OPTIONS)
    sign_parser.set_defaults(func=cmd_sign)
    demo_parser = commands.add_parser("demo", help="record a synthetic stream in every format, print what was written")
    demo_parser.set_defaults(func=cmd_demo)
    _add_publish(commands)
    _add_finalize(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.own_command_line = argv is None  # only then may `serve` exec itself again
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
