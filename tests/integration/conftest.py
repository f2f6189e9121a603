"""One local Ray for the whole integration session (Ray takes seconds to start)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def ray_session() -> Iterator[None]:
    import ray

    from raymlops.runtime import ensure_ray

    ensure_ray(jobs=True)  # the monitor tests submit retrain jobs through the Jobs API
    yield
    ray.shutdown()
