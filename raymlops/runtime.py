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

__all__ = ["LOCAL_RAY_ENV", "connected_jobs_address", "ensure_ray"]

#: set for a local Ray that raymlops starts, unless already set: Serve's high-throughput mode
#: (Ray 2.56+: user code on the replica's event loop, gRPC between deployments), without its
#: direct ingress, which raymlops does not use (requests come through Serve's proxy) and which
#: holds every ingress replica 30 s when it stops. Measured here with benchmarks/serving.py at 16
#: connections: 1.22x plain uvicorn rows/s on 100-row requests and 1.16x on single rows, against
#: 0.92-0.98x without it; no port is added. On a cluster, set these in the nodes' environment.
LOCAL_RAY_ENV = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"}


def ensure_ray(address: str | None = None, *, quiet: bool = True, jobs: bool = False) -> None:
    """Start or join Ray once per process, and set the Data options raymlops relies on.

    A local Ray starts without the dashboard unless ``jobs`` is true (the monitor submits
    retrain jobs through the Jobs API, which the dashboard serves): then it listens on
    127.0.0.1, on a free port, so two local Rays on one machine do not collide.
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
        if address is None and jobs:
            kwargs.update(include_dashboard=True, dashboard_host="127.0.0.1")
            kwargs["dashboard_port"] = _free_port()
            with _free_dashboard_agent_port():
                ray.init(**kwargs)
        else:
            if address is None:
                kwargs["include_dashboard"] = False
            ray.init(address=address, **kwargs)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True


def connected_jobs_address() -> str:
    """An address for ``JobSubmissionClient`` that works anywhere in the connected cluster:
    its GCS address, from which the client finds the dashboard (and Ray's token file).

    (:func:`raymlops.jobs.jobs_address` is the CLI's: a dashboard URL from a flag, the
    environment or the local cluster, for a process that is not connected to Ray.)"""
    import ray

    return ray.get_runtime_context().gcs_address


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
