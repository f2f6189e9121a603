"""Secrets stay out of what raymlops ships: the API key is not in the Serve application."""

from __future__ import annotations

from pathlib import Path

import pytest

from raymlops.config import load_config
from raymlops.examples import make_churn
from raymlops.pipeline import open_registry
from raymlops.schema import Schema
from tests.conftest import write_project
from tests.helpers import register_model


def test_the_api_key_is_read_in_the_replica_not_shipped_in_the_application(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cloudpickle

    from raymlops.serving.app import build_application

    config_path = write_project(tmp_path, extra="serving: {api_key_env: TEST_RAYMLOPS_KEY}\n")
    config = load_config(config_path)
    registry = open_registry(config)
    registry.promote(register_model(registry, make_churn(300, seed=1), Schema.from_config(config)))
    key = "sk-live-0123456789abcdef-never-ship-me"
    monkeypatch.setenv("TEST_RAYMLOPS_KEY", key)
    application = build_application(config)
    shipped = cloudpickle.dumps(application)  # what Serve sends to the cluster
    assert key.encode() not in shipped
    assert b"TEST_RAYMLOPS_KEY" in shipped, "the replica looks the key up by name"
