"""A version that crashes its loader cannot take serving down (issue 12).

The alias is moved to such a version behind the registry's back (``probe=None``, as an older
raymlops or a hand edit would): a running replica refuses the swap and keeps answering from
the old version, and a replica started while the alias names it falls back to the previous
champion in the audit log. Both say so in their status.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from tempfile import mkdtemp

import pytest
from ray import serve

from raymlops.config import load_config
from raymlops.contract import Columns, contract_for
from raymlops.examples import make_churn
from raymlops.pipeline import open_registry
from raymlops.registry import Registry
from raymlops.schema import Schema
from raymlops.serving.app import ModelDeployment
from tests.badmodels import register_crashing_model
from tests.conftest import write_project
from tests.helpers import register_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Registry]]:
    root = tmp_path_factory.mktemp("bad-version")
    config = load_config(write_project(root))
    registry = open_registry(config)
    v1 = register_model(
        registry,
        make_churn(400, seed=4),
        Schema.from_config(config),
        model="xgboost",
        params={"max_depth": 3},
        max_rounds=10,
    )
    registry.promote(v1, reason="good")
    yield config.storage, registry
    serve.shutdown()


def _deploy(storage: str, app: str):  # type: ignore[no-untyped-def]
    deployment = ModelDeployment.options(name=f"{app}-model", num_replicas=1)
    return serve.run(
        deployment.bind(storage, "churn", "champion", 8, 0.005, 3600.0, None),
        name=app,
        route_prefix=None,
    )


def _rows(count: int) -> Columns:
    """Rows as the ingress hands them to the model deployment: decoded by the schema's contract."""
    frame = make_churn(count, seed=9).drop(columns=["churned"])
    records = json.loads(frame.to_json(orient="records", date_format="iso"))
    schema = Schema.from_config(load_config(write_project(Path(mkdtemp()))))
    columns, report = contract_for(schema).from_records(records)
    assert report.ok, report.render()
    return columns


def test_a_replica_refuses_a_crashing_version_and_keeps_serving(
    project: tuple[str, Registry],
) -> None:
    storage, registry = project
    handle = _deploy(storage, "refuse")
    assert handle.status.remote().result(timeout_s=60)["model_version"] == "v1"
    bad = register_crashing_model(registry, "v1")
    Registry(registry.storage, registry.name, probe=None).promote(bad, reason="behind its back")

    assert handle.reload.remote().result(timeout_s=120) == "v1"
    status = handle.status.remote().result(timeout_s=60)
    assert status["model_version"] == "v1"
    assert "SIGSEGV" in status["degraded"]
    assert bad in status["degraded"]
    answer = handle.predict.remote(_rows(3)).result(timeout_s=60)
    assert answer["model_version"] == "v1"
    assert len(answer["predictions"]) == 3
    # asked again, it does not load the refused version again (the replica is still this one)
    assert handle.reload.remote().result(timeout_s=60) == "v1"
    serve.delete("refuse")


def test_a_new_replica_on_a_crashing_alias_falls_back_to_the_previous_champion(
    project: tuple[str, Registry],
) -> None:
    storage, registry = project
    assert registry.champion() != "v1", "the test before moved the alias to the crashing one"
    handle = _deploy(storage, "fallback")
    status = handle.status.remote().result(timeout_s=120)
    assert status["model_version"] == "v1"
    assert "previous version in the audit log" in status["degraded"]
    answer = handle.predict.remote(_rows(2)).result(timeout_s=60)
    assert answer["model_version"] == "v1"
    serve.delete("fallback")
