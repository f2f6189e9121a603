"""Connect to Ray: the cluster at ``--address`` / ``RAY_ADDRESS``, else a local one.

Called by entry points only (never at import). Ray Data keeps block order, so row numbers,
splits and digests do not depend on which block finishes first.

Example:
    >>> ensure_ray()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import socket

__all__ = ["ensure_ray", "jobs_address"]


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
            kwargs["include_dashboard"] = jobs
            if jobs:
                kwargs["dashboard_host"] = "127.0.0.1"
                kwargs["dashboard_port"] = _free_port()
        ray.init(address=address, **kwargs)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True


def jobs_address() -> str:
    """An address for ``JobSubmissionClient`` that works anywhere in the connected cluster:
    the GCS address, from which the client finds the dashboard (and Ray's token file)."""
    import ray

    return ray.get_runtime_context().gcs_address


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
