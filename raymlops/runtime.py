"""Connect to Ray: the cluster at ``--address`` / ``RAY_ADDRESS``, else a local one.

Called by entry points only (never at import). Ray Data keeps block order, so row numbers,
splits and digests do not depend on which block finishes first.

Example:
    >>> ensure_ray()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os

__all__ = ["ensure_ray"]


def ensure_ray(address: str | None = None, *, quiet: bool = True) -> None:
    """Start or join Ray once per process, and set the Data options raymlops relies on."""
    import ray

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        kwargs: dict[str, object] = {
            "logging_level": logging.WARNING if quiet else logging.INFO,
            "log_to_driver": True,
        }
        if address is None:
            # a laptop run: no dashboard to start, nothing listens beyond loopback
            kwargs["include_dashboard"] = False
        ray.init(address=address, **kwargs)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
