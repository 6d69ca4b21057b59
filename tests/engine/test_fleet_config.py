"""The options a fleet's nodes need: `--store-url` (which database, its password
kept out of every message) and `--node-id`."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import config, options
from engine.cli import build_parser
from engine.store.postgres import PostgresDatabase, StoreUnavailable
from engine.store.url import POSTGRESQL, SQLITE, parse, secrets_in

PASSWORD = "hunter2-pw"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in list(os.environ):
        if name.startswith("RECNODE_"):
            monkeypatch.delenv(name)


def test_sqlite_urls_follow_sqlalchemys_spelling():
    assert parse("sqlite:///state/x.db").path == Path("state/x.db")
    assert parse("sqlite:////var/lib/recnode/x.db").path == Path("/var/lib/recnode/x.db")
    assert parse("sqlite:////var/x.db").kind == SQLITE and parse("sqlite:////var/x.db").secrets == ()


def test_a_postgresql_url_is_shown_without_its_password():
    where = parse(f"postgresql://rec:{PASSWORD}%40x@db.internal:5433/recnode?sslmode=require&password=also")
    assert where.kind == POSTGRESQL
    assert where.redacted == "postgresql://rec@db.internal:5433/recnode?sslmode=require&password=%2A%2A%2A"
    assert set(where.secrets) == {f"{PASSWORD}%40x", f"{PASSWORD}@x", "also"}
    assert PASSWORD not in repr(where)
    assert parse("postgres://db/recnode").redacted == "postgresql://db/recnode"
    assert secrets_in("") == () and secrets_in("sqlite:///x") == ()


@pytest.mark.parametrize("url", [
    f"mysql://rec:{PASSWORD}@db/recnode", f"postgresql://rec:{PASSWORD}@db", f"postgresql://rec:{PASSWORD}@db:99999/x",
    f"postgresql://rec:{PASSWORD}@/recnode", "sqlite://relative.db", "sqlite:///", f"rec:{PASSWORD}@db/recnode",
])
def test_a_bad_url_is_one_error_naming_the_option_never_the_password(tmp_path, url):
    args = build_parser().parse_args(["serve", "--data-dir", str(tmp_path)])
    with pytest.raises(options.ConfigError) as caught:
        config.from_args(args, {"RECNODE_STORE_URL": url})
    message = str(caught.value)
    assert message.startswith("--store-url / RECNODE_STORE_URL: ") and PASSWORD not in message


@given(st.text(max_size=60))
def test_any_text_is_a_store_or_a_value_error(text):
    try:
        options.store_url(text)
    except ValueError:
        pass


def test_the_url_is_a_secret_of_the_configuration(tmp_path):
    url = f"postgresql://rec:{PASSWORD}@db/recnode"
    args = build_parser().parse_args(["serve", "--data-dir", str(tmp_path)])
    got = config.from_args(args, {"RECNODE_STORE_URL": url})
    assert got.store_location == url and PASSWORD not in repr(got)
    assert "RECNODE_STORE_URL" in __import__("engine.secret_env").secret_env.SECRET_ENV
    default = config.from_args(args, {})
    assert default.store_location == tmp_path.resolve() / "recnode.sqlite3"


def test_a_node_is_named_after_its_host_unless_named(tmp_path):
    args = build_parser().parse_args(["serve", "--data-dir", str(tmp_path)])
    assert config.from_args(args, {}).node_id == socket.gethostname()
    named = build_parser().parse_args(["serve", "--data-dir", str(tmp_path), "--node-id", "recnode-0"])
    assert config.from_args(named, {}).node_id == "recnode-0"
    for bad in ("-leading-dash", "a b", "x" * 254, "ünïcode"):
        bad_args = build_parser().parse_args(["serve", "--data-dir", str(tmp_path), f"--node-id={bad}"])
        with pytest.raises(options.ConfigError, match="^--node-id / RECNODE_NODE_ID: "):
            config.from_args(bad_args, {})


def test_an_unreachable_database_is_one_line_after_the_wait(closed_port):
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        PostgresDatabase(parse(f"postgresql://rec:{PASSWORD}@127.0.0.1:{closed_port}/recnode"), connect_timeout_s=1.0)
    assert 1.0 <= time.monotonic() - started < 5
    message = str(caught.value)
    assert message.startswith(f"--store-url / RECNODE_STORE_URL: cannot connect to "
                              f"postgresql://rec@127.0.0.1:{closed_port}/recnode within 1 s: ")
    assert "refused" in message.lower() and PASSWORD not in message and "\n" not in message


def test_a_wrong_password_says_so_without_it(postgres):
    url = postgres.create_database().replace(postgres.app_password, PASSWORD)
    with pytest.raises(StoreUnavailable, match="password authentication failed") as caught:
        PostgresDatabase(parse(url), connect_timeout_s=0.2)
    assert PASSWORD not in str(caught.value) and postgres.app_password not in str(caught.value)


def test_what_libpq_repeats_of_a_password_is_taken_out(closed_port):
    """libpq quotes a badly percent-encoded password in its error."""
    with pytest.raises(StoreUnavailable, match="percent-encoded") as caught:
        PostgresDatabase(parse(f"postgresql://rec:bad%zz{PASSWORD}@127.0.0.1:{closed_port}/x"), connect_timeout_s=0)
    assert PASSWORD not in str(caught.value)
