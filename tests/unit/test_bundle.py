"""VersionBundle: the one owner of a version's file names, layout and encoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raymlops.config import ColumnSpec
from raymlops.errors import IntegrityError, RegistryError
from raymlops.registry import Registry
from raymlops.registry.bundle import BundleReader, VersionBundle, json_bytes
from raymlops.schema import Schema
from raymlops.storage import Storage

SCHEMA = Schema.from_columns({"x": ColumnSpec(type="float")}, target="y", task="classification")


def bundle(**changes: object) -> VersionBundle:
    fields: dict[str, object] = {
        "model_kind": "xgboost",
        "model_file": "model.ubj",
        "model": b"model-bytes",
        "features_json": '{"features": []}',
        "schema": SCHEMA.to_dict(),
        "reference": pd.DataFrame({"x": [1.0, np.nan], "y": ["a", "b"]}),
        "metrics": {"metric": "roc_auc", "holdout": {"roc_auc": np.float64(0.9)}},
        "gate": {"passed": True},
        "lineage": {"parent": None},
        "trials": [{"index": 0, "score": 0.8}],
    }
    fields.update(changes)
    return VersionBundle(**fields)  # type: ignore[arg-type]


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(Storage.from_uri(str(tmp_path / "store")), "demo")


def test_the_layout_is_the_documented_one() -> None:
    """Given a bundle, its files are exactly the model file and the seven named files."""
    names = set(bundle().files())
    assert names == {
        "model.ubj",
        "features.json",
        "schema.json",
        "reference.parquet",
        "metrics.json",
        "gate.json",
        "lineage.json",
        "trials.json",
    }
    assert VersionBundle.MANIFEST == "MANIFEST.json"


def test_what_is_registered_reads_back_verified_and_equal(registry: Registry) -> None:
    """Given a registered bundle, when read back through BundleReader, every part is equal."""
    written = bundle()
    version = written.register(registry, metric="roc_auc", score=0.9, gate_passed=True)
    reader = BundleReader(registry, version)
    assert reader.version == "v1"
    assert (reader.model_kind, reader.model_file) == ("xgboost", "model.ubj")
    assert reader.summary == {
        "model": "xgboost",
        "model_file": "model.ubj",
        "metric": "roc_auc",
        "score": 0.9,
        "gate_passed": True,
    }
    assert reader.model_bytes() == b"model-bytes"
    assert reader.features_json().strip() == b'{"features": []}'
    assert Schema.from_dict(reader.schema()).to_dict() == SCHEMA.to_dict()
    assert reader.metrics()["holdout"]["roc_auc"] == 0.9, "numpy scalars become plain JSON"
    assert reader.gate() == {"passed": True}
    assert reader.lineage() == {"parent": None}
    assert reader.trials() == [{"index": 0, "score": 0.8}]
    pd.testing.assert_frame_equal(reader.reference(), written.reference)
    assert registry.verify(version).ok


def test_a_tampered_file_is_refused_before_decoding(registry: Registry, tmp_path: Path) -> None:
    """Given a version whose metrics.json changed on disk, reading it raises IntegrityError."""
    version = bundle().register(registry)
    path = tmp_path / "store" / "models" / "demo" / "versions" / version / VersionBundle.METRICS
    path.write_text('{"metric": "forged"}')
    with pytest.raises(IntegrityError, match="metrics.json"):
        BundleReader(registry, version).metrics()


def test_the_reader_pins_one_version_and_names_a_missing_one(registry: Registry) -> None:
    """Given v1 and v2, a reader of v1 reads v1's files; an unknown version is a RegistryError."""
    bundle(lineage={"n": 1}).register(registry)
    bundle(lineage={"n": 2}).register(registry)
    assert BundleReader(registry, "v1").lineage() == {"n": 1}
    with pytest.raises(RegistryError):
        BundleReader(registry, "v9")


def test_json_is_stable_and_plain() -> None:
    """Sorted keys and numpy scalars made plain: the same content gives the same bytes."""
    assert json_bytes({"b": np.int64(2), "a": 1}) == json_bytes({"a": 1, "b": 2})
