"""The HTTP API without Ray: KServe V1 shapes, the schema's row model, every bad input a 4xx."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from raymlops.config import ColumnSpec, ServingConfig
from raymlops.errors import ConfigError
from raymlops.examples import make_churn
from raymlops.predictor import load_predictor
from raymlops.registry import Registry
from raymlops.schema import Schema
from raymlops.serving.api import LocalBackend, admitted_predictions, create_app
from raymlops.storage import Storage
from tests.helpers import register_model

SCHEMA = Schema.from_columns(
    {
        "customer_id": ColumnSpec(type="string", role="id"),
        "plan": ColumnSpec(type="category", categories=["basic", "pro", "enterprise"]),
        "region": ColumnSpec(type="category", nullable=True, unknown="ignore"),
        "tenure_months": ColumnSpec(type="int", min=0, max=600),
        "monthly_spend": ColumnSpec(type="float", min=0, nullable=True),
        "autopay": ColumnSpec(type="bool"),
    },
    target="churned",
    task="classification",
)
ROW = {
    "customer_id": "c1",
    "plan": "pro",
    "region": "north",
    "tenure_months": 12,
    "monthly_spend": 55.5,
    "autopay": True,
}


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    registry = Registry(
        Storage.from_uri(str(tmp_path_factory.mktemp("serving") / "store")), "churn"
    )
    frame = make_churn(400, seed=2).drop(columns=["signup_date", "support_calls"])
    register_model(registry, frame, SCHEMA)
    return load_predictor(registry, "v1")


def client_for(predictor, **serving: object) -> TestClient:  # type: ignore[no-untyped-def]
    api_key = serving.pop("api_key", None)
    app = create_app(
        name="churn",
        schema=SCHEMA,
        serving=ServingConfig.model_validate(
            {"max_instances": 50, "max_body_bytes": 20_000, **serving}
        ),
        backend=LocalBackend(predictor),
        api_key=api_key,  # type: ignore[arg-type]
    )
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(predictor) -> TestClient:  # type: ignore[no-untyped-def]
    return client_for(predictor)


def test_predict_answers_with_version_probabilities_and_the_in_process_result(
    client: TestClient, predictor
) -> None:  # type: ignore[no-untyped-def]
    rows = make_churn(20, seed=7).drop(columns=["signup_date", "support_calls", "churned"])
    instances = json.loads(rows.to_json(orient="records"))
    answer = client.post("/v1/models/churn:predict", json={"instances": instances})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_version"] == "v1"
    assert body["classes"] == ["no", "yes"]
    assert len(body["predictions"]) == 20
    expected = predictor.predict(predictor.validate(pd.DataFrame(instances)))
    np.testing.assert_allclose(
        np.array(body["probabilities"]), expected.probabilities, rtol=0, atol=1e-9
    )
    assert body["predictions"] == expected.labels


def test_health_readiness_and_model_status(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "alive"}
    assert client.get("/readyz").json() == {"ready": True, "model_version": "v1"}
    status = client.get("/v1/models/churn").json()
    assert status == {
        "name": "churn", "ready": True, "model_version": "v1", "canary": None, "degraded": None
    }
    assert client.get("/v1/models/other").status_code == 404


def test_openapi_documents_every_column(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    row = next(v for k, v in spec["components"]["schemas"].items() if k.endswith("Row"))
    assert row["properties"]["tenure_months"]["maximum"] == 600
    assert row["properties"]["plan"]["enum"] == ["basic", "pro", "enterprise"]
    assert "nullable" in row["properties"]["monthly_spend"]["description"]
    assert client.get("/docs").status_code == 200


def _post(client: TestClient, body: object, **kwargs: object):  # type: ignore[no-untyped-def]
    return client.post("/v1/models/churn:predict", json=body, **kwargs)  # type: ignore[arg-type]


def test_errors_speak_to_the_client(client: TestClient) -> None:
    """No config advice over HTTP (a client cannot set nullable: true), and the target column
    sent in a request is named as the target, not as a column the schema lacks."""
    answer = _post(client, {"instances": [ROW, {**ROW, "tenure_months": None}]})
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert "set nullable" not in answer.text, "config advice is for the operator, not the client"
    assert "expected a value" in answer.text
    assert (error["details"][0]["row"], error["details"][0]["field"]) == (2, "tenure_months")
    target = _post(client, {"instances": [{**ROW, "churned": "yes"}]})
    assert target.status_code == 422, target.text
    detail = target.json()["error"]["details"][0]
    assert detail["field"] == "churned"
    assert "the target column" in detail["message"]
    assert "not in the schema" not in target.text


@pytest.mark.parametrize(
    ("instances", "field", "row"),
    [
        ([{**ROW, "colour": "red"}], "colour", 1),
        ([ROW, {k: v for k, v in ROW.items() if k != "plan"}], "plan", 2),
        ([{**ROW, "tenure_months": "twelve"}], "tenure_months", 1),
        ([{**ROW, "tenure_months": 12.5}], "tenure_months", 1),
        ([{**ROW, "autopay": "yes"}], "autopay", 1),
        ([{**ROW, "tenure_months": -1}], "tenure_months", 1),
        ([ROW, ROW, {**ROW, "monthly_spend": -5}], "monthly_spend", 3),
        ([{**ROW, "plan": "gold"}], "plan", 1),
        ([{**ROW, "plan": None}], "plan", 1),
    ],
    ids=[
        "unknown-column",
        "missing-column",
        "wrong-type",
        "fraction-for-int",
        "not-a-bool",
        "out-of-range",
        "third-row",
        "unknown-category",
        "null",
    ],
)
def test_bad_rows_are_422_naming_field_and_row(
    client: TestClient, instances: list, field: str, row: int
) -> None:
    answer = _post(client, {"instances": instances})
    assert answer.status_code == 422, answer.text
    detail = answer.json()["error"]["details"][0]
    assert (detail["field"], detail["row"]) == (field, row)
    assert f"row {row}, field {field}" in answer.json()["error"]["message"]


def test_unknown_category_is_accepted_where_the_schema_says_ignore(client: TestClient) -> None:
    assert _post(client, {"instances": [{**ROW, "region": "atlantis"}]}).status_code == 200


def test_nan_and_infinity_are_rejected(client: TestClient) -> None:
    for literal in ("NaN", "Infinity", "-Infinity"):
        raw = json.dumps({"instances": [ROW]}).replace("55.5", literal)
        answer = client.post(
            "/v1/models/churn:predict", content=raw, headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 422, (literal, answer.text)
        assert answer.json()["error"]["details"][0]["field"] == "monthly_spend"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ([ROW], 422),
        ({"rows": [ROW]}, 422),
        ({"instances": []}, 422),
        ({"instances": [ROW] * 51}, 422),
        ({"instances": "all"}, 422),
        ({"instances": [ROW], "extra": 1}, 422),
    ],
    ids=["not-an-object", "no-instances", "empty", "too-many", "not-a-list", "unknown-key"],
)
def test_request_shape_errors(client: TestClient, body: object, status: int) -> None:
    answer = _post(client, body)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["details"], "a 4xx names what is wrong"


def test_malformed_json_is_400_and_wrong_content_type_415(client: TestClient) -> None:
    broken = client.post(
        "/v1/models/churn:predict",
        content=b'{"instances": [',
        headers={"Content-Type": "application/json"},
    )
    assert broken.status_code == 400
    assert "malformed JSON" in broken.json()["error"]["message"]
    text = client.post(
        "/v1/models/churn:predict", content=b"plan=pro", headers={"Content-Type": "text/plain"}
    )
    assert text.status_code == 415
    assert "application/json" in text.json()["error"]["message"]


def test_body_over_the_limit_is_413_before_parsing(client: TestClient) -> None:
    big = {"instances": [{**ROW, "customer_id": "x" * 30_000}]}
    assert _post(client, big).status_code == 413

    def chunks():  # no Content-Length: the limit is enforced while the body arrives
        yield b'{"instances": [' + b" " * 15_000
        yield b" " * 15_000 + b"]}"

    answer = client.post(
        "/v1/models/churn:predict", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 413


def test_api_key_is_required_except_for_health(predictor) -> None:  # type: ignore[no-untyped-def]
    client = client_for(predictor, api_key="s3cret")
    assert _post(client, {"instances": [ROW]}).status_code == 401
    assert (
        _post(client, {"instances": [ROW]}, headers={"Authorization": "Bearer wrong"}).status_code
        == 401
    )
    assert client.get("/v1/models/churn").status_code == 401
    assert (
        _post(client, {"instances": [ROW]}, headers={"Authorization": "Bearer s3cret"}).status_code
        == 200
    )
    assert _post(client, {"instances": [ROW]}, headers={"X-API-Key": "s3cret"}).status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    keyed = {"Authorization": "Bearer s3cret"}
    assert "Bearer" in client.get("/openapi.json", headers=keyed).json()["info"]["description"]


def test_docs_and_the_spec_are_behind_the_key(predictor) -> None:  # type: ignore[no-untyped-def]
    """The spec lists every column with its ranges: with a key set it is not public."""
    client = client_for(predictor, api_key="s3cret")
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(path).status_code == 401, f"{path} answered without the key"
        assert client.get(path, headers={"X-API-Key": "s3cret"}).status_code == 200, path
    open_client = client_for(predictor)  # no key: loopback only, and the docs are open
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert open_client.get(path).status_code == 200, path
    paths = open_client.get("/openapi.json").json()["paths"]
    assert not {"/docs", "/redoc", "/openapi.json"} & set(paths), "the doc routes stay unlisted"


def test_a_read_key_cannot_predict_and_a_predict_key_cannot_read(
    predictor, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """serving.api_keys: variable name -> roles; the keys are read from the environment of the
    process that builds the app (the Serve replica)."""
    monkeypatch.setenv("TEST_READ_KEY", "reader")
    monkeypatch.setenv("TEST_PREDICT_KEY", "caller")
    client = client_for(
        predictor, api_keys={"TEST_READ_KEY": ["read"], "TEST_PREDICT_KEY": ["predict"]}
    )
    reader, caller = {"X-API-Key": "reader"}, {"Authorization": "Bearer caller"}
    refused = _post(client, {"instances": [ROW]}, headers=reader)
    assert refused.status_code == 403, refused.text
    assert "'predict' role" in refused.json()["error"]["message"]
    assert _post(client, {"instances": [ROW]}, headers=caller).status_code == 200
    assert client.get("/v1/models/churn", headers=reader).status_code == 200
    assert client.get("/openapi.json", headers=reader).status_code == 200
    assert client.get("/v1/models/churn", headers=caller).status_code == 403
    assert client.get("/docs", headers=caller).status_code == 403
    assert _post(client, {"instances": [ROW]}).status_code == 401, "no key at all"
    assert _post(client, {"instances": [ROW]}, headers={"X-API-Key": "other"}).status_code == 401
    monkeypatch.delenv("TEST_READ_KEY")
    with pytest.raises(ConfigError, match="serving.api_keys names TEST_READ_KEY"):
        client_for(predictor, api_keys={"TEST_READ_KEY": ["read"]})


def test_api_keys_name_variables_and_roles_strictly() -> None:
    for bad, message in (
        ({"my-secret-value": ["read"]}, "not an environment variable name"),
        ({"READ_KEY": []}, "at least one of predict, read"),
        ({"READ_KEY": ["admin"]}, "'predict' or 'read'"),
    ):
        with pytest.raises(ValidationError, match=message):
            ServingConfig.model_validate({"api_keys": bad})


def test_no_backend_yet_means_not_ready(predictor) -> None:  # type: ignore[no-untyped-def]
    app = create_app(name="churn", schema=SCHEMA, serving=ServingConfig())
    client = TestClient(app)
    assert client.get("/readyz").status_code == 503
    answer = _post(client, {"instances": [ROW]})
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "1"


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
rows = st.dictionaries(st.sampled_from([*ROW, "zzz"]), values, max_size=8)
bodies = st.one_of(
    st.fixed_dictionaries({"instances": st.lists(rows, max_size=4)}),
    st.fixed_dictionaries(
        {"instances": st.lists(st.builds(lambda r: {**ROW, **r}, rows), min_size=1, max_size=4)}
    ),
    values,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies)
def test_generated_bodies_never_get_a_server_error(client: TestClient, body: object) -> None:
    answer = _post(client, body)
    assert answer.status_code in (200, 400, 413, 415, 422), answer.text


def test_every_request_is_observed_with_id_version_rows_status_and_latency(
    predictor, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    from raymlops.serving.api import AccessRecord, log_access

    records: list[AccessRecord] = []

    def observe(record: AccessRecord) -> None:
        records.append(record)
        log_access(record)

    app = create_app(
        name="churn",
        schema=SCHEMA,
        serving=ServingConfig(),
        backend=LocalBackend(predictor),
        observer=observe,
    )
    client = TestClient(app)
    with caplog.at_level("INFO", logger="raymlops.access"):
        ok = _post(client, {"instances": [ROW, ROW]}, headers={"X-Request-Id": "abc-1"})
        bad = _post(client, {"instances": [{**ROW, "plan": "gold"}]})
        big = client.post(
            "/v1/models/churn:predict",
            content=b"x" * 5_000_000,
            headers={"Content-Type": "application/json"},
        )
    assert big.status_code == 413
    assert ok.headers["X-Request-Id"] == "abc-1"
    assert len(bad.headers["X-Request-Id"]) == 32
    assert [(r.status, r.model_version, r.rows) for r in records] == [
        (200, "v1", 2),
        (422, None, None),
        (413, None, None),
    ]
    assert records[0].request_id == "abc-1"
    assert all(r.latency_s > 0 for r in records)
    assert (
        "request_id=abc-1 POST /v1/models/churn:predict status=200 version=v1 rows=2" in caplog.text
    )


def test_the_access_log_cannot_be_forged_through_the_path_or_the_request_id(
    predictor, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    """A percent-encoded newline in the path, or a request id with spaces, once wrote a second,
    made-up access line; request ids are [A-Za-z0-9._-]{1,128} or replaced by a made one."""
    client = client_for(predictor)
    with caplog.at_level("INFO", logger="raymlops.access"):
        client.get("/v1/models/x%0Arequest_id=evil%20GET%20/admin%20status=200")
        answer = _post(client, {"instances": [ROW]}, headers={"X-Request-Id": "evil status=200"})
        long_id = _post(client, {"instances": [ROW]}, headers={"X-Request-Id": "a" * 129})
        fine = _post(client, {"instances": [ROW]}, headers={"X-Request-Id": "Ab.9_-z"})
    lines = [r.getMessage() for r in caplog.records if r.name == "raymlops.access"]
    assert len(lines) == 4, lines
    for line in lines:  # one line, seven space-separated fields, the status where it belongs
        fields = line.split(" ")
        assert "\n" not in line, line
        assert len(fields) == 7, line
        assert fields[0].startswith("request_id="), line
        assert fields[3].startswith("status="), line
    assert "/v1/models/x\\x0arequest_id=evil\\x20GET" in lines[0], lines[0]
    for made in (answer, long_id):
        assert len(made.headers["X-Request-Id"]) == 32, "an id outside the pattern is replaced"
        assert "evil" not in made.headers["X-Request-Id"]
    assert fine.headers["X-Request-Id"] == "Ab.9_-z"


class _Counting:
    """A backend that answers with a fixed version and counts its calls."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.calls = 0

    async def predict(self, records, request_id=None):  # type: ignore[no-untyped-def]
        from raymlops.serving.api import PredictOutput

        self.calls += 1
        return PredictOutput(["yes"] * len(records), None, None, self.version)

    async def status(self):  # type: ignore[no-untyped-def]
        return {"ready": True, "model_version": self.version}


def test_canary_gets_its_fraction_sticky_by_request_id() -> None:
    import asyncio

    from raymlops.serving.api import SplitBackend

    split = SplitBackend(_Counting("v1"), _Counting("v2"), fraction=0.3, shadow=False)

    async def versions(ids: list[str]) -> list[str]:
        return [(await split.predict([ROW], request_id)).model_version for request_id in ids]

    ids = [f"req-{i}" for i in range(2000)]
    first = asyncio.run(versions(ids))
    share = first.count("v2") / len(first)
    assert 0.26 < share < 0.34, share
    assert asyncio.run(versions(ids)) == first, "the same request id always gets the same version"


def test_shadow_answers_with_the_champion_and_copies_to_the_canary() -> None:
    import asyncio

    from raymlops.serving.api import SplitBackend

    champion, canary = _Counting("v1"), _Counting("v2")
    split = SplitBackend(champion, canary, fraction=0.0, shadow=True)

    async def run() -> list[str]:
        answers = [(await split.predict([ROW], f"r{i}")).model_version for i in range(20)]
        await asyncio.sleep(0.05)
        return answers

    assert set(asyncio.run(run())) == {"v1"}
    assert (champion.calls, canary.calls) == (20, 20)


def test_canary_status_is_reported(predictor) -> None:  # type: ignore[no-untyped-def]
    from raymlops.serving.api import SplitBackend

    split = SplitBackend(LocalBackend(predictor), _Counting("v9"), fraction=0.5, shadow=False)
    serving = ServingConfig.model_validate({"canary": {"version": "v9", "fraction": 0.5}})
    client = TestClient(create_app(name="churn", schema=SCHEMA, serving=serving, backend=split))
    status = client.get("/v1/models/churn").json()
    assert status["canary"] == {"version": "v9", "fraction": 0.5, "shadow": False}
    assert status["model_version"] == "v1"


def test_kserve_v1_routes_are_complete(client: TestClient) -> None:
    """KServe V1: liveness at /, the model list, GET on :predict is 405, and the model name is
    checked before the body (an unknown model is 404 whatever the body holds)."""
    assert client.get("/").json() == {"status": "alive"}
    assert client.get("/v1/models").json() == {"models": ["churn"]}
    wrong_method = client.get("/v1/models/churn:predict")
    assert wrong_method.status_code == 405, wrong_method.text
    assert wrong_method.headers["Allow"] == "POST"
    for body in ({"instances": [ROW]}, {"rows": 1}, [1]):
        unknown = client.post("/v1/models/other:predict", json=body)
        assert unknown.status_code == 404, unknown.text
        assert "'other'" in unknown.json()["error"]["message"]


def test_openapi_declares_served_names_errors_and_examples(predictor) -> None:  # type: ignore[no-untyped-def]
    rows = make_churn(3, seed=5).drop(columns=["signup_date", "support_calls", "churned"])
    examples = json.loads(rows.to_json(orient="records"))
    app = create_app(
        name="churn", schema=SCHEMA, serving=ServingConfig(), backend=LocalBackend(predictor),
        examples=[*examples, {"plan": "gold"}],
    )
    client = TestClient(app)
    spec = client.get("/openapi.json").json()
    predict = spec["paths"]["/v1/models/{model}:predict"]["post"]
    model = next(p for p in predict["parameters"] if p["name"] == "model")
    assert model["schema"]["enum"] == ["churn"]
    for code in ("400", "404", "413", "415", "422", "503"):
        schema = predict["responses"][code]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, code
    body = predict["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/PredictRequest"}
    shown = [{k: v for k, v in r.items() if v is not None} for r in examples]  # nulls left out
    assert body["example"] == {"instances": shown}, "only rows that pass the schema"
    # the documented example is answered 200 ("Try it out" works)
    assert _post(client, body["example"]).status_code == 200


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('"customer_id": "\\ud800"', "customer_id"),
        ('"tenure_months": ' + "9" * 4301, "tenure_months"),
        ('"monthly_spend": "55.5"', "monthly_spend"),
        ('"customer_id": "' + "x" * 2000 + '"', "customer_id"),
        ('"autopay": 1', "autopay"),
    ],
    ids=["lone-surrogate", "4301-digit-int", "float-as-string", "string-too-long", "bool-as-int"],
)
def test_bad_values_from_the_audit_are_422_naming_the_field(
    client: TestClient, raw: str, field: str
) -> None:
    row = json.dumps({k: v for k, v in ROW.items() if k != field})
    body = '{"instances": [' + row[:-1] + ", " + raw + "}]}"
    answer = client.post(
        "/v1/models/churn:predict",
        content=body.encode(),
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 422, answer.text
    detail = answer.json()["error"]["details"][0]
    assert (detail["row"], detail["field"]) == (1, field), "rows are 1-based: row 1 is instances[0]"


def test_id_columns_may_be_left_out(client: TestClient) -> None:
    row = {k: v for k, v in ROW.items() if k != "customer_id"}
    assert _post(client, {"instances": [row]}).status_code == 200
    assert _post(client, {"instances": [{**row, "customer_id": None}]}).status_code == 200


class _HeldBackend(LocalBackend):
    """The in-process model, with every prediction held until released."""

    def __init__(self, predictor) -> None:  # type: ignore[no-untyped-def]
        super().__init__(predictor)
        self.release = asyncio.Event()
        self.waiting = 0

    async def predict(self, rows, request_id=None):  # type: ignore[no-untyped-def]
        self.waiting += 1
        await self.release.wait()
        self.waiting -= 1
        return await super().predict(rows, request_id)


def test_an_app_refuses_predictions_beyond_its_limit_at_once_and_admits_again_after(
    predictor,  # type: ignore[no-untyped-def]
) -> None:
    serving = ServingConfig(max_ongoing_requests=1)
    limit = admitted_predictions(serving)
    backend = _HeldBackend(predictor)
    app = create_app(name="churn", schema=SCHEMA, serving=serving, backend=backend)
    url, body = "/v1/models/churn:predict", {"instances": [ROW]}

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            # given as many predictions held in the model as the app admits
            held = [asyncio.create_task(client.post(url, json=body)) for _ in range(limit)]

            async def all_held() -> None:
                while backend.waiting < limit:
                    await asyncio.sleep(0.001)

            await asyncio.wait_for(all_held(), timeout=10)
            # when one more arrives, then it is told to come back, without waiting
            refused = await asyncio.wait_for(client.post(url, json=body), timeout=5)
            assert refused.status_code == 503, refused.text
            assert refused.headers["Retry-After"] == "1"
            assert "overloaded" in refused.json()["error"]["message"]
            # and once the held ones are answered, their slots are free again
            backend.release.set()
            assert [a.status_code for a in await asyncio.gather(*held)] == [200] * limit
            assert (await client.post(url, json=body)).status_code == 200

    asyncio.run(scenario())


def test_a_refused_or_rejected_request_frees_its_slot(predictor) -> None:  # type: ignore[no-untyped-def]
    serving = ServingConfig(max_ongoing_requests=1)
    client = TestClient(
        create_app(name="churn", schema=SCHEMA, serving=serving, backend=LocalBackend(predictor))
    )
    url = "/v1/models/churn:predict"
    for _ in range(admitted_predictions(serving) + 1):  # each 422 must give its slot back
        assert client.post(url, json={"instances": [{**ROW, "plan": 3}]}).status_code == 422
    assert client.post(url, json={"instances": [ROW]}).status_code == 200
    assert client.app.state.admission.in_flight == 0  # type: ignore[attr-defined]
