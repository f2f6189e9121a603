"""Every command that joins a cluster finds its token as `raymlops job submit` does, and an auth
failure is one message (exit 2) that names where the token was looked for."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from raymlops.errors import UsageError
from raymlops.runtime import auth_error, use_cluster_token


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for key in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(key, raising=False)
    home = tmp_path / "raymlops-home"
    home.mkdir()
    monkeypatch.setenv("RAYMLOPS_HOME", str(home))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return home


def test_the_token_of_cluster_up_is_used_with_ray_auth_mode_token(clean_env: Path) -> None:
    """Given ~/.raymlops/auth_token (written by `raymlops cluster up`), Ray's client is told to
    send it: RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH, which Ray 2.60 needs both of."""
    token = clean_env / "auth_token"
    token.write_text("a" * 64 + "\n")
    token.chmod(0o600)
    assert use_cluster_token() == f"the token from {token}"
    assert os.environ["RAY_AUTH_MODE"] == "token"
    assert os.environ["RAY_AUTH_TOKEN_PATH"] == str(token)


def test_a_token_in_the_environment_wins_and_an_explicit_mode_is_kept(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_AUTH_TOKEN", "b" * 64)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert use_cluster_token() == "the token from RAY_AUTH_TOKEN"
    assert "RAY_AUTH_TOKEN_PATH" not in os.environ, "Ray reads RAY_AUTH_TOKEN itself"


def test_no_token_says_where_it_looked(clean_env: Path) -> None:
    said = use_cluster_token()
    assert said.startswith("no token was found (looked in RAY_AUTH_TOKEN, ")
    assert str(clean_env / "auth_token") in said
    assert "RAY_AUTH_MODE" not in os.environ, "no token: Ray's mode is left as it is"


def test_a_refused_connection_is_one_usage_error_naming_the_token_source() -> None:
    """Ray 2.60 retries a refused token for 20 s, then raises ConnectionError("Failed to
    connect ..."); an error that names authentication is said to be one for sure."""
    refused = auth_error(
        ConnectionError("Failed to connect to Ray cluster at 10.0.0.5:6379"),
        "10.0.0.5:6379",
        "no token was found (looked in RAY_AUTH_TOKEN, /h/.raymlops/auth_token)",
    )
    assert isinstance(refused, UsageError)
    assert refused.exit_code == 2
    text = str(refused)
    assert "looked in RAY_AUTH_TOKEN, /h/.raymlops/auth_token" in text
    assert "set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH)" in text
    sure = auth_error(
        RuntimeError("Unauthenticated: RPC error: InvalidAuthToken"), "h:1", "the token from X"
    )
    assert sure is not None
    assert "refused this connection: the token from X" in str(sure)
    assert auth_error(ValueError("bad runtime_env"), "h:1", "x") is None, "other errors pass"


def test_a_ray_job_driver_keeps_the_environment_ray_gave_it(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")
    (clean_env / "auth_token").write_text("c" * 64)
    (clean_env / "auth_token").chmod(0o644)  # would be refused outside a job
    assert use_cluster_token() == "the token of the job's cluster"
    assert "RAY_AUTH_MODE" not in os.environ


def test_a_loopback_cluster_address_is_joined_on_loopback() -> None:
    """`raymlops cluster up`'s GCS listens on 127.0.0.1: joining it must not resolve the
    address to the machine's outward one (nothing listens there)."""
    from raymlops.runtime import _is_loopback

    assert _is_loopback("127.0.0.1:6379")
    assert _is_loopback("localhost:6379")
    assert _is_loopback("[::1]:6379")
    assert not _is_loopback("10.0.0.5:6379")
    assert not _is_loopback("head.example:6379")
