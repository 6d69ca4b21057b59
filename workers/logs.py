"""structlog JSON logging shared by the supervisor and the workers.

Every line on stderr is one JSON object, tracebacks included: an exception is an
`exception` list of {exc_type, exc_value, frames} (structlog's dict_tracebacks),
and the standard library's loggers (aiohttp's, asyncio's "exception was never
retrieved") and uncaught exceptions, in any thread, go through the same chain.

Secrets the process knows are scrubbed from every rendered line as a last line
of defence; code must still never log them.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable

import structlog

REDACTED = "[redacted]"


def _scrubber(secrets: tuple[str, ...]):
    def scrub(_logger, _method, rendered: str) -> str:
        for secret in secrets:
            rendered = rendered.replace(secret, REDACTED)
        return rendered

    return scrub


def _log_uncaught(exc_type, exc_value, exc_traceback) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc_value, exc_traceback)
        return
    structlog.get_logger("uncaught").critical("uncaught_exception",
                                             exc_info=(exc_type, exc_value, exc_traceback))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    structlog.get_logger("uncaught").critical("uncaught_exception", thread=getattr(args.thread, "name", None),
                                             exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


def configure_logging(level: str = "info", secrets: Iterable[str] = (), stream=None) -> None:
    known = tuple(s for s in secrets if s and len(s) >= 4)
    out = stream or sys.stderr
    stamped = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    rendering = [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    if known:
        rendering.append(_scrubber(known))
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *stamped, *rendering],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        # One write per line (WriteLogger), not print's two: the node and its workers share one
        # stderr, and with PYTHONUNBUFFERED (the Docker image sets it) each write reaches the file
        # at once, so a line written in two pieces could have another process's line between them.
        logger_factory=structlog.WriteLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    # The standard library's records (aiohttp, asyncio, libraries) as the same JSON lines.
    handler = logging.StreamHandler(out)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *stamped, structlog.stdlib.ExtraAdder()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendering]))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(logging.WARNING, logging.getLevelNamesMapping()[level.upper()]))
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
