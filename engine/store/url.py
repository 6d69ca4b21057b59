"""Where the store lives: `--store-url`, parsed once, with a form safe to show.

    sqlite:///<path>                              a SQLite file (SQLAlchemy's spelling:
                                                  sqlite:///rel/x.db, sqlite:////abs/x.db)
    postgresql://user:password@host:port/db?...   a PostgreSQL database (libpq's URI;
                                                  postgres:// is the same)

The password (in the user part, or libpq's `password=` parameter) is a secret:
`redacted` leaves it out, and nothing here ever repeats a URL in an error.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
_SQLITE_PREFIX = "sqlite:///"
_POSTGRES_SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True)
class StoreUrl:
    kind: str  # SQLITE or POSTGRESQL
    path: Path | None = None  # SQLite's file
    conninfo: str = field(default="", repr=False)  # PostgreSQL's URI, password and all
    redacted: str = ""  # the location without its password, for logs and errors

    @property
    def secrets(self) -> tuple[str, ...]:
        """The password as written and as meant (percent-decoded), for log scrubbing."""
        if self.kind != POSTGRESQL:
            return ()
        parts = urllib.parse.urlsplit(self.conninfo)
        raw = [parts.password or ""]
        raw += [value for name, value in urllib.parse.parse_qsl(parts.query) if name == "password"]
        return tuple(dict.fromkeys(s for text in raw for s in (text, urllib.parse.unquote(text)) if s))


def secrets_in(url: str) -> tuple[str, ...]:
    """The password of a store URL ('' or a SQLite one has none)."""
    return parse(url).secrets if url.strip() else ()


def sqlite_file(path: Path) -> StoreUrl:
    return StoreUrl(SQLITE, path=path, redacted=f"{_SQLITE_PREFIX}{path}")


def parse(url: str) -> StoreUrl:
    """A StoreUrl, or ValueError saying what is wrong (never repeating the URL: it may hold a password)."""
    url = url.strip()
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme == SQLITE:
        if not url.startswith(_SQLITE_PREFIX) or len(url) == len(_SQLITE_PREFIX):
            raise ValueError("a SQLite store is sqlite:///<path> (sqlite:////absolute/path for an absolute one)")
        return sqlite_file(Path(url[len(_SQLITE_PREFIX):]))
    if scheme in _POSTGRES_SCHEMES:
        return _postgres(url)
    shown = f"{scheme!r}" if scheme else "none"
    raise ValueError(f"the scheme is {shown}: expected sqlite:///<path> or postgresql://user:password@host:port/db")


def _postgres(url: str) -> StoreUrl:
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("not a PostgreSQL URL: postgresql://user:password@host:port/db") from None
    database = parts.path.lstrip("/")
    if not parts.hostname or not database:
        raise ValueError("a PostgreSQL store needs a host and a database: postgresql://user:password@host:port/db")
    user = f"{parts.username}@" if parts.username else ""
    query = urllib.parse.urlencode([(name, "***" if name == "password" else value)
                                    for name, value in urllib.parse.parse_qsl(parts.query)])
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    shown = f"{POSTGRESQL}://{user}{host}{f':{port}' if port else ''}/{database}{f'?{query}' if query else ''}"
    return StoreUrl(POSTGRESQL, conninfo=url, redacted=shown)
