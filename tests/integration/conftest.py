"""One local Ray for the whole integration session (Ray takes seconds to start)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

#: the variable holding the API key of tests that serve with a key (see ray_session)
KEYED_ENV = "RAYMLOPS_TEST_API_KEY"


@pytest.fixture(scope="session", autouse=True)
def ray_session() -> Iterator[None]:
    import ray

    from raymlops.runtime import ensure_ray

    # Serve replicas read the API key from their own environment, which they inherit from the
    # process that starts Ray: a key for the keyed-serving test is set before Ray starts
    os.environ.setdefault(KEYED_ENV, "k3y")
    ensure_ray(jobs=True)  # the monitor tests submit retrain jobs through the Jobs API
    yield
    ray.shutdown()
