"""Cluster files are validated with Ray's own schemas, not by eye."""

from __future__ import annotations

from pathlib import Path

import yaml

CLUSTER = Path(__file__).parents[2] / "cluster"


def test_serve_config_validates_against_rays_schema() -> None:
    from ray.serve.schema import ServeDeploySchema

    payload = yaml.safe_load((CLUSTER / "serve_config.yaml").read_text())
    schema = ServeDeploySchema.parse_obj(payload)
    (application,) = schema.applications
    assert application.import_path == "raymlops.serving.app:build_app"
    assert schema.http_options.host == "127.0.0.1"


def test_serve_config_args_are_the_builders_args() -> None:
    from raymlops.serving.app import BuildArgs

    payload = yaml.safe_load((CLUSTER / "serve_config.yaml").read_text())
    BuildArgs.model_validate(payload["applications"][0]["args"])
