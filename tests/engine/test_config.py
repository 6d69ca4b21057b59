"""Options of `recnode serve`: where a value comes from, how it is checked, and the
secrets' hand-over (the process-level behaviour is in tests/e2e/test_node_process.py)."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import config, options, secret_env
from engine.cli import build_parser


def serve_args(*argv: str):
    return build_parser().parse_args(["serve", *argv])


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in list(os.environ):
        if name.startswith("RECNODE_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(("text", "expected"), [
    ("1024", 1024), ("1024B", 1024), ("10G", 10 * 1024**3), ("10GiB", 10 * 1024**3), ("10 GiB", 10 * 1024**3),
    ("10gb", 10 * 1024**3), ("500M", 500 * 1024**2), ("500 MiB", 500 * 1024**2), ("64k", 65536),
    ("1.5G", 3 * 1024**3 // 2), ("2T", 2 * 1024**4), (" 7 ", 7),
])
def test_sizes_are_bytes_with_binary_units(text, expected):
    assert options.size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "10 gigs", "-1G", "0", "0.0001", "10 GiB extra", "1e9", "ten"])
def test_bad_sizes_are_refused(text):
    with pytest.raises(ValueError):
        options.size(text)


def test_cpu_cap_is_a_fraction_or_a_percentage():
    assert options.share("0.85") == options.share("85%") == 0.85
    assert options.share("100") == 100  # tests: never busy by CPU
    for bad in ("0", "-5%", "nan", "inf", "%", "lots"):
        with pytest.raises(ValueError):
            options.share(bad)


NUMBERS = st.one_of(st.integers(min_value=-10, max_value=10**400), st.floats()).map(str)
SUFFIXES = st.sampled_from(["", "K", " GiB", "T", "%", "e999", "-1", "-65535"])


@given(st.one_of(st.text(max_size=40), st.builds(str.__add__, NUMBERS, SUFFIXES)))
def test_any_text_is_a_value_or_a_value_error(text):
    """Whatever an operator types, a check answers with a reason, never another exception."""
    for option in options.SERVE_OPTIONS:
        try:
            option.check([text] if option.kind == "list" else text)
        except ValueError:
            pass


def test_command_line_wins_over_environment_over_default(monkeypatch, tmp_path):
    monkeypatch.setenv("RECNODE_DATA_DIR", str(tmp_path))
    assert config.from_args(serve_args(), {}).port == 8080
    monkeypatch.setenv("RECNODE_PORT", "9001")
    monkeypatch.setenv("RECNODE_SPOOL_MAX_BYTES", "1 GiB")
    monkeypatch.setenv("RECNODE_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("RECNODE_DISABLE_LOCAL_STORAGE", "yes")
    monkeypatch.setenv("RECNODE_STORAGE_ENDPOINTS", "1=http://127.0.0.1:9000,2=https://oss.example")
    got = config.from_args(serve_args(), {})
    assert (got.port, got.spool_max_bytes, got.log_level, got.local_storage_enabled) == (9001, 1024**3, "warning", False)
    assert got.storage_endpoints == ((1, "http://127.0.0.1:9000"), (2, "https://oss.example"))
    got = config.from_args(serve_args("--port", "9002", "--storage-endpoint", "10=http://h:1"), {})
    assert got.port == 9002 and got.storage_endpoints == ((10, "http://h:1"),)
    monkeypatch.setenv("RECNODE_PORT", "")  # empty is unset
    assert config.from_args(serve_args(), {}).port == 8080


def test_a_bad_value_names_the_option_and_its_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("RECNODE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RECNODE_MAX_TASKS", "0")
    with pytest.raises(options.ConfigError, match=r"^--max-tasks / RECNODE_MAX_TASKS: '0' is below 1$"):
        config.from_args(serve_args(), {})


def test_secrets_come_from_the_hand_over_not_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RECNODE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RECNODE_SERVER_SECRET", "left-in-the-environment")  # already taken: ignored
    got = config.from_args(serve_args(), {"RECNODE_SERVER_SECRET": "handed-over", "RECNODE_INGEST_TOKEN": "tok"})
    assert (got.server_secret, got.ingest_token, got.callback_secret) == ("handed-over", "tok", "handed-over")
    got = config.from_args(serve_args(), {})
    assert got.server_secret == (tmp_path / config.SERVER_SECRET_FILE).read_text().strip()  # generated, 0600
    assert (tmp_path / config.SERVER_SECRET_FILE).stat().st_mode & 0o777 == 0o600


def test_take_secrets_without_exec_removes_them_from_the_environment(monkeypatch):
    monkeypatch.setenv("RECNODE_SERVER_SECRET", "s3cret")
    monkeypatch.setenv("RECNODE_CALLBACK_SECRET", "")
    assert secret_env.take_secrets(reexec=False) == {"RECNODE_SERVER_SECRET": "s3cret"}
    assert "RECNODE_SERVER_SECRET" not in os.environ and "RECNODE_CALLBACK_SECRET" not in os.environ


def test_the_hand_over_is_read_once_and_closed(monkeypatch):
    fd = os.memfd_create("test-secrets")
    os.write(fd, json.dumps({"RECNODE_SERVER_SECRET": "from-fd", "PATH": "not a secret"}).encode())
    os.lseek(fd, 0, os.SEEK_SET)
    monkeypatch.setenv(secret_env.HANDOFF_ENV, str(fd))
    assert secret_env.take_secrets(reexec=True) == {"RECNODE_SERVER_SECRET": "from-fd"}
    assert secret_env.HANDOFF_ENV not in os.environ
    with pytest.raises(OSError):
        os.fstat(fd)
    monkeypatch.setenv(secret_env.HANDOFF_ENV, str(fd))  # closed now
    with pytest.raises(options.ConfigError, match=secret_env.HANDOFF_ENV):
        secret_env.take_secrets(reexec=True)
