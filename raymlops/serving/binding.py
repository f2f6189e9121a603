"""Where Serve's HTTP port really binds, and whether serving there needs a key.

``serving.host`` is only what ``raymlops serve`` asks for. ``serve deploy`` takes its host from
the Serve config's ``http_options`` (``host: 0.0.0.0`` is common), a Serve that already runs
keeps the options it started with, and ``RAY_SERVE_DEFAULT_HTTP_HOST`` sets the default.
:func:`resolve_api_key` checks all of them, so a port reachable beyond this machine never
answers without a key. Serve's HAProxy ingress (``RAY_SERVE_ENABLE_HA_PROXY=1``) changes the
default to every interface: while no Serve runs yet, that default counts (``serve run`` builds
the app before it starts Serve with no host). A host that is given is kept by HAProxy's
frontend, the replicas' own HTTP ports and its fallback proxy (tests/e2e/test_network.py), so
once Serve runs, its own host is what counts.

Example:
    >>> api_key = resolve_api_key(config)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from raymlops.config import ProjectConfig
from raymlops.errors import ConfigError
from raymlops.loopback import is_loopback_host

__all__ = ["resolve_api_key", "serve_http_hosts"]


def _running_http_host() -> str | None:
    """The host of the Serve that runs on the connected Ray, or None (no Ray, no Serve)."""
    try:
        import ray

        if not ray.is_initialized():
            return None
        from ray.serve.context import _get_global_client

        # Serve has no public getter for its HTTP options; the controller client holds them
        client = _get_global_client(raise_if_no_controller_running=False)
        return None if client is None else str(client.http_config.host)
    except Exception:  # no controller, or another Ray version: the other sources still count
        return None


def serve_http_hosts(
    requested: str,
    *,
    environ: Mapping[str, str] = os.environ,
    running: str | None = None,
) -> list[str]:
    """Every host Serve's HTTP port may bind: ``requested`` (``serving.host``), the running
    Serve's (``running``, else asked of the connected Ray), ``RAY_SERVE_DEFAULT_HTTP_HOST``,
    and, while no Serve runs, every interface under ``RAY_SERVE_ENABLE_HA_PROXY=1`` (its
    default host)."""
    hosts = [requested]
    actual = running if running is not None else _running_http_host()
    if actual:
        hosts.append(actual)
    default = environ.get("RAY_SERVE_DEFAULT_HTTP_HOST", "").strip()
    if default:
        hosts.append(default)
    haproxy = environ.get("RAY_SERVE_ENABLE_HA_PROXY", "").strip().lower() in ("1", "true")
    if haproxy and not actual:
        hosts.append("0.0.0.0")  # noqa: S104 - named to be refused without a key
    return list(dict.fromkeys(hosts))


def resolve_api_key(
    config: ProjectConfig,
    *,
    environ: Mapping[str, str] = os.environ,
    running_host: str | None = None,
) -> str | None:
    """The key of ``serving.api_key_env`` (None when unset), after checking that serving is
    not reachable beyond loopback without any key.

    Any key counts: ``serving.api_key_env``'s or one of ``serving.api_keys`` (whose variables
    must all be set).

    Raises:
        ConfigError: a variable of ``serving.api_keys`` is not set, or no key is set and Serve
            binds (or may bind) beyond loopback; the message names where and the fix.
    """
    serving = config.serving
    env = serving.api_key_env
    key = environ.get(env) if env else None
    missing = [name for name in serving.api_keys if not environ.get(name)]
    if missing:
        raise ConfigError(
            f"serving.api_keys names {', '.join(missing)}, not set in this environment: "
            "export them (and on every node of a cluster), or remove them from the config"
        )
    if key or serving.api_keys:
        return key or None
    exposed = [h for h in serve_http_hosts(serving.host, environ=environ, running=running_host)
               if not is_loopback_host(h)]
    if exposed:
        raise ConfigError(
            f"Serve's HTTP port binds {', '.join(exposed)} (serving.host, the running Serve's "
            "http_options, RAY_SERVE_DEFAULT_HTTP_HOST or HAProxy's default), beyond this machine, but no "
            f"API key is set: export {env or 'RAYMLOPS_API_KEY'} (serving.api_key_env) or a "
            "key of serving.api_keys, or bind 127.0.0.1"
        )
    return None
