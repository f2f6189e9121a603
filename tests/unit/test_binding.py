"""resolve_api_key checks where Serve's HTTP port really binds, not only serving.host."""

from __future__ import annotations

import pytest

from raymlops.config import ProjectConfig
from raymlops.errors import ConfigError
from raymlops.loopback import is_loopback_host
from raymlops.serving.binding import resolve_api_key, serve_http_hosts


def _config(**serving: object) -> ProjectConfig:
    return ProjectConfig.model_validate(
        {
            "name": "churn",
            "data": {"source": "x.csv", "target": "y", "columns": {"x": {"type": "float"}}},
            "training": {"task": "classification"},
            "serving": serving,
        }
    )


def test_a_serve_bound_beyond_loopback_needs_a_key_whatever_serving_host_says() -> None:
    """`serve deploy` with http_options.host: 0.0.0.0 once served with no key, because only
    serving.host (127.0.0.1) was checked."""
    config = _config(host="127.0.0.1")
    with pytest.raises(ConfigError, match=r"binds 0\.0\.0\.0 .* no API key is set"):
        resolve_api_key(config, environ={}, running_host="0.0.0.0")
    for environ in (
        {"RAY_SERVE_DEFAULT_HTTP_HOST": "0.0.0.0"},
        {"RAY_SERVE_DEFAULT_HTTP_HOST": "10.1.2.3"},
    ):
        with pytest.raises(ConfigError, match="no API key is set"):
            resolve_api_key(config, environ=environ, running_host="127.0.0.1")
    assert resolve_api_key(config, environ={}, running_host="127.0.0.1") is None
    keyed = {"RAYMLOPS_API_KEY": "s3cret", "RAY_SERVE_DEFAULT_HTTP_HOST": "0.0.0.0"}
    assert resolve_api_key(config, environ=keyed, running_host="0.0.0.0") == "s3cret"


def test_role_keys_count_as_a_key_and_must_all_be_set() -> None:
    config = _config(host="0.0.0.0", api_keys={"READ_KEY": ["read"], "CALL_KEY": ["predict"]})
    environ = {"READ_KEY": "r", "CALL_KEY": "c"}
    assert resolve_api_key(config, environ=environ, running_host="0.0.0.0") is None
    with pytest.raises(ConfigError, match="serving.api_keys names CALL_KEY"):
        resolve_api_key(config, environ={"READ_KEY": "r"}, running_host="0.0.0.0")


def test_hosts_and_loopback() -> None:
    assert serve_http_hosts("127.0.0.1", environ={}, running="::") == ["127.0.0.1", "::"]
    loopback = ("127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2", "[::ffff:127.0.0.1]")
    assert [is_loopback_host(h) for h in loopback] == [True] * len(loopback)
    assert not any(is_loopback_host(h) for h in ("0.0.0.0", "::", "", None, "example.com", "10.0.0.1"))


def test_haproxy_default_host_counts_until_serve_runs() -> None:
    """Under RAY_SERVE_ENABLE_HA_PROXY=1 a Serve started with no host binds every interface
    (`serve run` builds the app before it starts Serve); a Serve that runs keeps its own host,
    which HAProxy, the replicas and its fallback proxy bind (tests/e2e/test_network.py)."""
    config = _config(host="127.0.0.1")
    haproxy = {"RAY_SERVE_ENABLE_HA_PROXY": "1"}
    with pytest.raises(ConfigError, match=r"binds 0\.0\.0\.0 .*HAProxy's default"):
        resolve_api_key(config, environ=haproxy)  # no Ray here: no Serve runs
    assert resolve_api_key(config, environ=haproxy, running_host="127.0.0.1") is None
    with pytest.raises(ConfigError, match=r"binds 0\.0\.0\.0"):
        resolve_api_key(config, environ=haproxy, running_host="0.0.0.0")
    assert serve_http_hosts("127.0.0.1", environ={"RAY_SERVE_ENABLE_HA_PROXY": "0"}) == [
        "127.0.0.1"
    ]
