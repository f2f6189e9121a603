"""A version that verifies but breaks its loader is refused before an alias moves to it.

The crashing model is a real XGBoost model whose trees point at a node that does not exist:
its files match the manifest, and loading it and predicting kills the process with SIGSEGV.
The probe runs it in a child process, so this test process survives to check the refusal.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from raymlops.cli import main
from raymlops.config import ColumnSpec, load_config
from raymlops.errors import IntegrityError
from raymlops.pipeline import open_registry
from raymlops.registry import Registry
from raymlops.registry.probe import ProbeError, probe_version
from raymlops.schema import Schema
from raymlops.storage import Storage
from tests.badmodels import register_broken_model, register_crashing_model
from tests.helpers import random_rows, register_model

SCHEMA = Schema.from_columns({"x": ColumnSpec(type="float")}, target="y", task="classification")


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(Storage.from_uri(str(tmp_path / "store")), "demo")


def _xgboost(registry: Registry, seed: int = 0) -> str:
    return register_model(
        registry, random_rows(200, seed=seed), SCHEMA, model="xgboost", params={"max_depth": 3}, max_rounds=5
    )


def test_a_good_version_scores_its_reference_rows_in_a_child(registry: Registry) -> None:
    v1 = _xgboost(registry)
    result = probe_version(registry, v1)
    assert (result.version, result.rows) == ("v1", 32)


def test_promote_refuses_a_model_that_crashes_its_loader(registry: Registry) -> None:
    v1 = _xgboost(registry)
    registry.promote(v1, reason="first")
    v2 = register_crashing_model(registry, v1)
    assert registry.verify(v2).ok, "the files match the manifest: only loading shows it"
    with pytest.raises(ProbeError, match=r"crashed the process that loaded it \(SIGSEGV\)"):
        registry.promote(v2, reason="bad")
    assert registry.champion() == "v1"
    assert [e.version for e in registry.audit()] == ["v1"], "a refused move is not in the audit"


def test_promote_refuses_a_model_its_loader_rejects(registry: Registry) -> None:
    v1 = _xgboost(registry)
    v2 = register_broken_model(registry, v1)
    with pytest.raises(ProbeError, match="cannot load it and score its reference rows"):
        registry.promote(v2)
    assert registry.champion() is None
    assert isinstance(ProbeError("x"), IntegrityError), "exit 4, as any registry integrity error"


def test_rollback_probes_the_version_it_goes_back_to(registry: Registry, tmp_path: Path) -> None:
    v1 = _xgboost(registry)
    registry.promote(v1)
    registry.promote(_xgboost(registry, seed=1))
    # v1's model is swapped for a crashing one under a matching manifest (a hand edit)
    v3 = register_crashing_model(registry, v1)
    folder = tmp_path / "store" / "models" / "demo" / "versions"
    (folder / "v1").rename(folder / "v1-old")
    (folder / v3).rename(folder / "v1")
    manifest = (folder / "v1" / "MANIFEST.json").read_text().replace('"v3"', '"v1"')
    (folder / "v1" / "MANIFEST.json").write_text(manifest)
    with pytest.raises(ProbeError, match="SIGSEGV"):
        registry.rollback()
    assert registry.champion() == "v2"


def test_cli_promote_of_a_crashing_model_exits_4_and_keeps_the_champion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "raymlops.yaml"
    config.write_text(
        "name: demo\nstorage: ./store\n"
        "data: {source: sklearn:iris, target: y, columns: {x: {type: float}}}\n"
        "training: {task: classification}\n"
    )
    registry = open_registry(load_config(config))
    v1 = _xgboost(registry)
    v2 = register_crashing_model(registry, v1)
    c = ["--config", str(config)]
    assert main(["registry", "promote", *c, v1]) == 0
    assert main(["registry", "promote", *c, v2]) == 4
    err = capsys.readouterr().err
    assert "demo v2: the model crashed the process that loaded it (SIGSEGV)" in err
    assert "Traceback" not in err
    assert open_registry(load_config(config)).champion() == "v1"
