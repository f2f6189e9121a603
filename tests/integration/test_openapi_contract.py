"""Schemathesis against /openapi.json: the spec and the server agree (bounded run).

The app is the one Serve runs (create_app), answered in-process by the registered version, so
this checks the contract itself: no server error, every answer conforms to the documented status
codes and schemas, valid generated requests are answered 200, invalid ones are refused."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks

from raymlops.config import ServingConfig
from raymlops.predictor import load_predictor
from raymlops.registry import Registry
from raymlops.serving.api import LocalBackend, create_app
from raymlops.storage import Storage
from tests.helpers import register_model
from tests.unit.test_serving_api import SCHEMA


def _app(root: str):  # type: ignore[no-untyped-def]
    from raymlops.examples import make_churn

    registry = Registry(Storage.from_uri(root), "churn")
    frame = make_churn(300, seed=3).drop(columns=["signup_date", "support_calls"])
    register_model(registry, frame, SCHEMA)
    serving = ServingConfig.model_validate({"max_instances": 20, "max_body_bytes": 200_000})
    return create_app(
        name="churn", schema=SCHEMA, serving=serving,
        backend=LocalBackend(load_predictor(registry, "v1")),
    )


CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.positive_data_acceptance,
    checks.negative_data_rejection,
]


def test_the_server_answers_as_its_spec_says(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Every operation, positive and negative generated requests (bounded): 0 server errors,
    0 schema violations, valid requests answered 2xx and invalid ones refused."""
    api = schemathesis.openapi.from_asgi("/openapi.json", _app(str(tmp_path)))
    seen: dict[str, set[int]] = {}
    strategies = [
        r.ok().as_strategy(generation_mode=mode)
        for r in api.get_all_operations()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ]

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=st.one_of(strategies))
    def check(case) -> None:  # type: ignore[no-untyped-def]
        response = case.call()
        seen.setdefault(case.operation.label, set()).add(response.status_code)
        case.validate_response(response, checks=CHECKS)

    check()
    predict = seen["POST /v1/models/{model}:predict"]
    assert 200 in predict, f"valid generated rows are answered 200: {seen}"
    assert 422 in predict, f"invalid generated rows are refused: {seen}"
    assert all(code < 500 for codes in seen.values() for code in codes), seen
