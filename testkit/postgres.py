"""A private PostgreSQL for tests and benchmarks: Debian's server binaries, a
cluster in a temporary directory, listening on a free 127.0.0.1 port.

The server runs as a child of the process that starts it (not daemonized by
pg_ctl), and gets SIGQUIT (immediate shutdown) if that process dies, so no
server outlives a killed test run. As root it runs as the `postgres` user
(initdb refuses root), which owns the directory.

Connections over TCP need a password (scram-sha-256), as a real deployment's
would; the node connects as APP_ROLE, which owns its databases and is no
superuser.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from functools import partial
from pathlib import Path

import psycopg

from testkit.ports import free_port
from testkit.process import die_with_parent

BIN_GLOB = "/usr/lib/postgresql/*/bin"
SUPERUSER = "postgres"
APP_ROLE = "recnode"
START_TIMEOUT_S = 30.0


def server_bin() -> Path | None:
    """The newest installed server's bin directory, or None without one."""
    found = [Path(d) for d in glob.glob(BIN_GLOB) if (Path(d) / "initdb").exists() and (Path(d) / "postgres").exists()]
    return max(found, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0) if found else None


class PostgresCluster:
    def __init__(self, *, durable: bool = False, settings: tuple[str, ...] = ()):
        """`durable`: fsync as in production (benchmarks); off by default, for tests' speed.
        `settings`: more server settings, "name=value" (benchmarks load pg_stat_statements)."""
        self.durable = durable
        self.settings = settings
        self.port = 0
        self.superuser_password = secrets.token_hex(12)
        self.app_password = secrets.token_hex(12)
        self._bin = server_bin()
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._databases = 0

    def _as_owner(self) -> dict:
        return {"user": SUPERUSER, "group": SUPERUSER, "extra_groups": []} if os.geteuid() == 0 else {}

    def start(self) -> PostgresCluster:
        if self._bin is None:
            raise RuntimeError(f"no PostgreSQL server under {BIN_GLOB} (bash .ci/install-postgres)")
        self._dir = Path(tempfile.mkdtemp(prefix="recnode-pg-"))
        pwfile = self._dir / "pwfile"
        pwfile.write_text(self.superuser_password + "\n")
        if os.geteuid() == 0:
            shutil.chown(self._dir, SUPERUSER, SUPERUSER)
            shutil.chown(pwfile, SUPERUSER, SUPERUSER)
        subprocess.run([str(self._bin / "initdb"), "-D", str(self._dir / "data"), "-U", SUPERUSER,
                        "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}",
                        "--encoding=UTF8", "--no-locale", "--no-sync"],
                       check=True, capture_output=True, **self._as_owner())
        pwfile.unlink()
        self.port = free_port()
        settings = ["listen_addresses=127.0.0.1", "max_connections=200"]
        if not self.durable:
            settings += ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
        settings += self.settings
        self._log = open(self._dir / "server.log", "ab")
        self._process = subprocess.Popen(
            [str(self._bin / "postgres"), "-D", str(self._dir / "data"), "-p", str(self.port), "-k", str(self._dir),
             *(arg for setting in settings for arg in ("-c", setting))],
            stdout=self._log, stderr=subprocess.STDOUT, preexec_fn=partial(die_with_parent, signal.SIGQUIT),
            **self._as_owner())
        self._wait_ready()
        self.admin(f"CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{self.app_password}'")
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.server_log()[-2000:]}")
            try:
                psycopg.connect(self.url("postgres", SUPERUSER), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def pid(self) -> int:
        """The postmaster's pid: its process tree is the server (benchmarks measure its CPU)."""
        assert self._process is not None, "not started"
        return self._process.pid

    def server_log(self) -> str:
        return (self._dir / "server.log").read_text(errors="replace") if self._dir else ""

    def url(self, database: str, role: str = APP_ROLE) -> str:
        password = self.superuser_password if role == SUPERUSER else self.app_password
        return f"postgresql://{role}:{password}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> list[tuple]:
        """Run SQL as the superuser, in the `postgres` database."""
        with psycopg.connect(self.url("postgres", SUPERUSER), autocommit=True) as connection:
            cursor = connection.execute(sql)
            return cursor.fetchall() if cursor.description is not None else []

    def admin_in(self, url: str, sql: str) -> list[tuple]:
        """Run SQL as the superuser in the database of `url` (one create_database gave)."""
        with psycopg.connect(self.url(url.rsplit("/", 1)[1], SUPERUSER), autocommit=True) as connection:
            cursor = connection.execute(sql)
            return cursor.fetchall() if cursor.description is not None else []

    def create_database(self, name: str | None = None) -> str:
        """A new empty database owned by APP_ROLE; returns the URL the node would be given."""
        self._databases += 1
        name = name or f"recnode_{os.getpid()}_{self._databases}"
        self.admin(f'CREATE DATABASE "{name}" OWNER {APP_ROLE}')
        return self.url(name)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)  # fast shutdown: clients are cut off
            try:
                self._process.wait(15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._dir is not None:
            self._log.close()
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
