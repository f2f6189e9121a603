"""The pure parts of the Serve application: the in-replica back-pressure and the autoscaling
options handed to Serve (no Ray is started)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from raymlops.config import AutoscalingConfig, ServingConfig
from raymlops.contract import RequestRejected
from raymlops.serving.app import ReplicaBackend, admitted_predictions

ANSWER = {"predictions": [1], "probabilities": None, "classes": None, "model_version": "v1"}


class _HeldServer:
    """A model server whose predictions wait until released."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.release = asyncio.Event()

    async def predict(self, rows: Any, request_id: str | None = None) -> dict[str, Any]:
        await self.release.wait()
        return self.answer

    def status(self) -> dict[str, Any]:
        return {"ready": True, "model_version": "v1", "degraded": None}


def _released(answer: dict[str, Any]) -> _HeldServer:
    server = _HeldServer(answer)
    server.release.set()
    return server


def test_a_rejected_batch_member_is_a_request_rejected() -> None:
    async def scenario() -> None:
        server = _HeldServer({"error": "row 0, field plan: unknown", "status": 422, "details": []})
        server.release.set()
        backend = ReplicaBackend(server)  # type: ignore[arg-type]
        with pytest.raises(RequestRejected) as raised:
            await backend.predict(None)  # type: ignore[arg-type]
        assert raised.value.status == 422
        assert (await ReplicaBackend(_released(ANSWER)).predict(None)).model_version == "v1"  # type: ignore[arg-type]

    asyncio.run(scenario())


def test_a_replica_admits_five_times_max_ongoing_requests() -> None:
    assert admitted_predictions(ServingConfig(max_ongoing_requests=1)) == 5
    assert admitted_predictions(ServingConfig()) == 5 * ServingConfig().max_ongoing_requests


def test_serve_bounds_the_queue_in_front_of_a_replica_and_answers_503_beyond() -> None:
    """Behind HAProxy a replica's own HTTP server queues what exceeds its slots: bounded, and
    beyond it Serve answers like the app (503, Retry-After: 1). Serve accepts the options."""
    from ray import serve

    from raymlops.serving.app import _BACKPRESSURE, _replica_capacity, _replica_queue

    serving = ServingConfig(max_ongoing_requests=1)
    assert (_replica_capacity(serving), _replica_queue(serving)) == (10, 100)

    class Replica:
        pass

    deployment = serve.deployment(
        max_ongoing_requests=_replica_capacity(serving),
        max_queued_requests=_replica_queue(serving),
        backpressure_config=_BACKPRESSURE,
    )(Replica)
    assert deployment.max_queued_requests == 100
    assert deployment.backpressure_config.status_code == 503
    assert deployment.backpressure_config.retry_after_s == 1


def test_autoscaling_options_pass_only_what_is_set_and_serve_accepts_them() -> None:
    from ray.serve.config import AutoscalingConfig as ServeAutoscaling

    plain = AutoscalingConfig().serve_options()
    assert set(plain) == {"min_replicas", "max_replicas", "target_ongoing_requests"}
    fast = AutoscalingConfig(upscale_delay_s=0.5, downscale_delay_s=1, look_back_period_s=2)
    parsed = ServeAutoscaling(**fast.serve_options())
    assert (parsed.upscale_delay_s, parsed.downscale_delay_s, parsed.look_back_period_s) == (
        0.5,
        1.0,
        2.0,
    )
    assert ServeAutoscaling(**plain).downscale_delay_s == 600.0, "unset: Serve's default"


def test_a_lone_request_never_waits_for_a_batch_by_default() -> None:
    assert ServingConfig().batch_wait_timeout_s == 0.0
