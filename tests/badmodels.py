"""Versions whose files match their manifest but whose model breaks its loader.

Written by hand through :meth:`Registry.register`, so the manifest (sha256 of every file) is
correct: ``registry verify`` passes, and only loading the model shows the problem.
"""

from __future__ import annotations

import json

from raymlops.predictor import load_predictor
from raymlops.registry import Registry

__all__ = ["register_broken_model", "register_crashing_model"]


def _copy_with_model(registry: Registry, base: str, model: bytes, model_file: str) -> str:
    manifest = registry.manifest(base)
    files = {
        name: registry.read_verified(base, name, manifest)
        for name in manifest["files"]
        if name != manifest["summary"]["model_file"]
    }
    files[model_file] = model
    summary = {**manifest["summary"], "model_file": model_file}
    return registry.register(files, summary=summary)


def register_crashing_model(registry: Registry, base: str) -> str:
    """A copy of xgboost version ``base`` whose trees point at a node that does not exist:
    XGBoost 3 loads it and dies with SIGSEGV when it predicts (no Python exception)."""
    booster = load_predictor(registry, base).model
    document = json.loads(bytes(booster.save_raw("json")))
    for tree in document["learner"]["gradient_booster"]["model"]["trees"]:
        tree["left_children"][0] = 10**8
    return _copy_with_model(registry, base, json.dumps(document).encode(), "model.json")


def register_broken_model(registry: Registry, base: str) -> str:
    """A copy of ``base`` whose model file is not a model at all (its loader raises)."""
    return _copy_with_model(registry, base, b"{not a model", "model.json")
