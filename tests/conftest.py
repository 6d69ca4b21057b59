"""Real storage servers on 127.0.0.1, started once per test session."""

from __future__ import annotations

import pytest

from testkit.moto_server import MotoServer
from tests.helpers.oss_server import OssServer

S3_BUCKET = "recnode-test"
OSS_BUCKET = "recnode-oss-test"
OSS_KEY_ID = "LTAI5tRecnodeTestKey"
OSS_SECRET = "oss-Secret-7f3a9c1e-do-not-leak"


@pytest.fixture(scope="session")
def moto_server():
    """moto's S3 server with IAM authentication on; `.access_key_id` / `.access_key_secret`
    are the only credentials it accepts."""
    server = MotoServer(iam_auth=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_bucket(moto_server) -> str:
    moto_server.create_bucket(S3_BUCKET)
    return S3_BUCKET


@pytest.fixture(scope="session")
def oss_server():
    server = OssServer({OSS_KEY_ID: OSS_SECRET}, (OSS_BUCKET,)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (connections are refused)."""
    from testkit.ports import free_port

    return free_port()


@pytest.fixture(scope="session")
def postgres():
    """A private PostgreSQL (testkit.postgres), started on first use and stopped after the session."""
    from testkit.postgres import BIN_GLOB, PostgresCluster, server_bin

    if server_bin() is None:
        pytest.skip(f"no PostgreSQL server binaries under {BIN_GLOB}: install them with bash .ci/install-postgres")
    cluster = PostgresCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request, tmp_path):
    """Where a store-level test keeps its store, once per backend: a SQLite file (a Path)
    or a fresh database on the session's PostgreSQL (its URL)."""
    if request.param == "sqlite":
        return tmp_path / "store.sqlite3"
    return request.getfixturevalue("postgres").create_database()
