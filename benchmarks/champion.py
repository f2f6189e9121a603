"""The champion a benchmark serves or scores, and the files the baseline script gets of it.

Benchmarks register one XGBoost model in-process (no Ray, the registration the tests use) and
hand the script a user would write instead a plain folder with the same model file and
``features.json``, read through the registry (checked against the manifest), never by a
path into the registry's layout.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from raymlops.config import ProjectConfig
from raymlops.registry import Registry
from raymlops.registry.bundle import VersionBundle
from raymlops.schema import Schema
from raymlops.storage import Storage

__all__ = ["XGBOOST_PARAMS", "register_champion"]

#: the champion's parameters in every benchmark that serves or scores one (100 rounds)
XGBOOST_PARAMS = {"max_depth": 6, "eta": 0.1, "subsample": 0.9, "colsample_bytree": 0.9}


def register_champion(
    config: ProjectConfig, frame: pd.DataFrame, export: Path, *, reason: str
) -> str:
    """Register an XGBoost model of ``frame`` for ``config``, promote it to champion, and write
    its model file and ``features.json`` to ``export``; returns the version."""
    from tests.helpers import register_model  # the same in-process registration the tests use

    registry = Registry(Storage.from_uri(config.storage), config.name)
    version = register_model(
        registry, frame, Schema.from_config(config), model="xgboost", params=XGBOOST_PARAMS,
        max_rounds=100,
    )  # fmt: skip
    registry.promote(version, reason=reason)
    manifest = registry.manifest(version)
    export.mkdir(parents=True, exist_ok=True)
    for filename in (manifest["summary"]["model_file"], VersionBundle.FEATURES):
        (export / filename).write_bytes(registry.read_verified(version, filename, manifest))
    return version
