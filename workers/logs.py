"""structlog JSON logging shared by the supervisor and the workers.

Secrets the process knows are scrubbed from every rendered line as a last line
of defence; code must still never log them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

import structlog

REDACTED = "[redacted]"


def _scrubber(secrets: tuple[str, ...]):
    def scrub(_logger, _method, rendered: str) -> str:
        for secret in secrets:
            rendered = rendered.replace(secret, REDACTED)
        return rendered

    return scrub


def configure_logging(level: str = "info", secrets: Iterable[str] = (), stream=None) -> None:
    known = tuple(s for s in secrets if s and len(s) >= 4)
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        structlog.processors.JSONRenderer(),
    ]
    if known:
        processors.append(_scrubber(known))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
