"""A generated fuzz run of 10,000 requests against the API: 0 server errors.

The app is the one Serve runs (same FastAPI app, in-process backend), driven with hypothesis:
valid rows with one field replaced by any JSON value, missing and unknown fields, bodies of
every JSON type, malformed bytes and wrong content types.
"""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raymlops.config import ServingConfig
from raymlops.examples import make_churn
from raymlops.predictor import load_predictor
from raymlops.registry import Registry
from raymlops.schema import Schema
from raymlops.serving.api import LocalBackend, create_app
from raymlops.storage import Storage
from tests.conftest import CHURN_COLUMNS
from tests.helpers import register_model

EXAMPLES = 10_000
ROW = json.loads(
    make_churn(1, seed=3).drop(columns=["churned"]).to_json(orient="records", date_format="iso")
)[0]
FIELDS = list(ROW)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def perturbed_rows(draw: st.DrawFn) -> dict:
    row = dict(ROW)
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["replace", "drop", "add"]))
        field = draw(st.sampled_from(FIELDS))
        if action == "replace":
            row[field] = draw(json_values)
        elif action == "drop":
            row.pop(field, None)
        else:
            row[draw(st.text(min_size=1, max_size=6))] = draw(json_values)
    return row


valid_rows = st.builds(
    lambda tenure, calls, region: {
        **ROW,
        "tenure_months": tenure,
        "support_calls": calls,
        "region": region,
    },
    st.integers(0, 600),
    st.integers(0, 100),
    st.none() | st.text(max_size=8),
)
requests = st.one_of(
    st.builds(
        lambda rows: ("json", {"instances": rows}), st.lists(valid_rows, min_size=1, max_size=5)
    ),
    st.builds(lambda rows: ("json", {"instances": rows}), st.lists(perturbed_rows(), max_size=5)),
    st.builds(lambda value: ("json", value), json_values),
    st.builds(lambda raw: ("bytes", raw), st.binary(max_size=64)),
    st.builds(lambda text: ("text", text), st.text(max_size=64)),
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    import yaml

    columns = yaml.safe_load(CHURN_COLUMNS)
    from raymlops.config import ColumnSpec

    schema = Schema.from_columns(
        {k: ColumnSpec.model_validate(v) for k, v in columns.items() if k != "churned"},
        target="churned",
        task="classification",
    )
    registry = Registry(Storage.from_uri(str(tmp_path_factory.mktemp("fuzz"))), "churn")
    register_model(registry, make_churn(300, seed=4), schema)
    app = create_app(
        name="churn",
        schema=schema,
        serving=ServingConfig(),
        backend=LocalBackend(load_predictor(registry, "v1")),
    )
    return TestClient(app, raise_server_exceptions=False)


def _send(client: TestClient, kind: str, payload: object):  # type: ignore[no-untyped-def]
    url = "/v1/models/churn:predict"
    if kind == "json":
        return client.post(
            url, content=json.dumps(payload), headers={"Content-Type": "application/json"}
        )
    if kind == "bytes":
        return client.post(url, content=payload, headers={"Content-Type": "application/json"})  # type: ignore[arg-type]
    return client.post(url, content=str(payload).encode(), headers={"Content-Type": "text/plain"})


def test_ten_thousand_generated_requests_get_no_server_error_and_reach_the_model(
    client: TestClient,
) -> None:
    """The run counts its own answers (no state shared with another test): every one is under
    500 with a message, and enough were valid (200) and invalid (422) to mean something."""
    counts: dict[int, int] = {}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(request=requests)
    def one_request(request: tuple[str, object]) -> None:
        answer = _send(client, *request)
        counts[answer.status_code] = counts.get(answer.status_code, 0) + 1
        assert answer.status_code < 500, answer.text
        if answer.status_code != 200:
            assert answer.json()["error"]["message"], "every error says what is wrong"

    one_request()
    assert sum(counts.values()) >= EXAMPLES, counts
    assert counts.get(200, 0) > 1000, f"many generated requests were valid and answered: {counts}"
    assert counts.get(422, 0) > 1000, counts
