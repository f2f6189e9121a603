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


# -- KubeRay manifests against the vendored CRD schemas ------------------------------------------

KUBERAY = CLUSTER / "kuberay"
CRDS = CLUSTER / "crds"
_SCHEMA_FILES = {
    "RayCluster": "ray.io_rayclusters.v1.schema.json",
    "RayJob": "ray.io_rayjobs.v1.schema.json",
    "RayService": "ray.io_rayservices.v1.schema.json",
    "RayCronJob": "ray.io_raycronjobs.v1.schema.json",
}


def _strict(node: object) -> object:
    """The schema as the API server applies it: unknown fields are errors (``kubectl apply``'s
    strict field validation), except where the CRD preserves unknown fields."""
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


def _validator(kind: str):  # type: ignore[no-untyped-def]
    import json

    import jsonschema

    document = json.loads((CRDS / _SCHEMA_FILES[kind]).read_text())
    assert document["kind"] == kind
    return jsonschema.Draft7Validator(_strict(document["openAPIV3Schema"]))


def _manifests() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(KUBERAY.glob("*.yaml")):
        docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _cluster_specs() -> dict[str, dict]:
    """Every Ray cluster spec in the manifests, by manifest kind."""
    specs = {}
    for _, doc in _manifests():
        spec = doc.get("spec", {})
        found = {
            "RayCluster": lambda s: s,
            "RayJob": lambda s: s["rayClusterSpec"],
            "RayService": lambda s: s["rayClusterConfig"],
            "RayCronJob": lambda s: s["jobTemplate"]["rayClusterSpec"],
        }.get(doc["kind"])
        if found:
            specs[doc["kind"]] = found(spec)
    return specs


def test_every_kuberay_manifest_validates_against_its_crd_schema() -> None:
    kinds = []
    for name, doc in _manifests():
        if doc["kind"] not in _SCHEMA_FILES:
            assert doc["kind"] in ("ConfigMap", "NetworkPolicy"), f"{name}: unexpected kind {doc['kind']}"
            continue
        assert doc["apiVersion"] == "ray.io/v1", name
        errors = [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in _validator(doc["kind"]).iter_errors(doc)
        ]
        assert errors == [], f"{name} does not match the {doc['kind']} CRD:\n" + "\n".join(errors)
        kinds.append(doc["kind"])
    assert sorted(kinds) == ["RayCluster", "RayCronJob", "RayJob", "RayService"]


def test_the_schema_check_catches_a_typo() -> None:
    """A misspelt field must fail, or the validation above proves nothing."""
    (doc,) = [d for _, d in _manifests() if d["kind"] == "RayCluster"]
    doc["spec"]["workerGroupSpecs"][0]["replica"] = 2
    assert not _validator("RayCluster").is_valid(doc)
    (job,) = [d for _, d in _manifests() if d["kind"] == "RayJob"]
    job["spec"]["rayClusterSpec"]["authOptions"]["mode"] = "password"
    assert not _validator("RayJob").is_valid(job)


def test_every_ray_cluster_has_token_auth_and_resource_requests() -> None:
    specs = _cluster_specs()
    assert set(specs) == {"RayCluster", "RayJob", "RayService", "RayCronJob"}
    for kind, spec in specs.items():
        assert spec["authOptions"] == {"mode": "token", "secretName": "raymlops-ray-token"}, kind
        assert spec["rayVersion"] == "2.60.0", kind
        groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
        for group in groups:
            for container in group["template"]["spec"]["containers"]:
                resources = container["resources"]
                assert {"cpu", "memory"} <= set(resources["requests"]), (kind, container["name"])
                assert resources["limits"]["memory"] == resources["requests"]["memory"]
        gpu = [g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu"]
        assert gpu, f"{kind}: a GPU worker group"
        (container,) = gpu[0]["template"]["spec"]["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # one cluster shape everywhere: the four copies must not drift apart
    first = specs["RayCluster"]
    assert all(spec == first for spec in specs.values()), "the cluster specs differ"


def test_rayservice_serve_config_is_the_serve_deploy_config() -> None:
    from ray.serve.schema import ServeDeploySchema

    from raymlops.serving.app import BuildArgs

    (service,) = [d for _, d in _manifests() if d["kind"] == "RayService"]
    config = ServeDeploySchema.parse_obj(yaml.safe_load(service["spec"]["serveConfigV2"]))
    local = ServeDeploySchema.parse_obj(yaml.safe_load((CLUSTER / "serve_config.yaml").read_text()))
    (app,) = config.applications
    assert app.import_path == local.applications[0].import_path
    assert BuildArgs.model_validate(app.args).config == "/home/ray/project/raymlops.yaml"
    assert config.http_options.host == "0.0.0.0", "behind the Kubernetes Service"


def test_the_mounted_project_config_is_valid_and_uses_s3(tmp_path: Path) -> None:
    from raymlops.config import load_config

    (configmap,) = [d for _, d in _manifests() if d["kind"] == "ConfigMap"]
    path = tmp_path / "raymlops.yaml"
    path.write_text(configmap["data"]["raymlops.yaml"])
    config = load_config(path)
    assert config.storage.startswith("s3://"), "pods share no disk: the registry is on S3"
    assert config.data.source.startswith("s3://")
    assert config.serving.api_key_env == "RAYMLOPS_API_KEY", "Serve's port has no Ray token"
    for name, doc in _manifests():
        spec = doc.get("spec", {})
        entry = spec.get("entrypoint") or spec.get("jobTemplate", {}).get("entrypoint")
        if entry:
            assert "--config /home/ray/project/raymlops.yaml" in entry, name


# -- the cluster launcher ------------------------------------------------------------------------


def _launcher() -> dict:
    return yaml.safe_load((CLUSTER / "aws.yaml").read_text())


def _validate_launcher(config: dict) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(config))


def test_launcher_config_passes_rays_own_validation() -> None:
    _validate_launcher(_launcher())


def test_launcher_validation_catches_a_typo() -> None:
    import jsonschema
    import pytest

    config = _launcher()
    config["available_node_types"]["gpu_worker"]["min_worker"] = 0
    with pytest.raises(jsonschema.ValidationError):
        _validate_launcher(config)


def test_launcher_has_token_auth_cpu_and_gpu_workers_and_installs_raymlops() -> None:
    config = _launcher()
    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    assert types["gpu_worker"]["node_config"]["InstanceType"].startswith(("g", "p"))
    assert types["cpu_worker"]["min_workers"] >= 1
    starts = config["head_start_ray_commands"][1:] + config["worker_start_ray_commands"][1:]
    assert all("RAY_AUTH_MODE=token" in c for c in starts), "every node starts with token auth"
    assert "--dashboard-host=127.0.0.1" in config["head_start_ray_commands"][1]
    assert "~/.ray/auth_token" in config["file_mounts"]
    assert any("~/raymlops[s3]" in c for c in config["setup_commands"])


def test_every_cluster_runs_serve_as_raymlops_does_locally() -> None:
    """The launcher's nodes and the KubeRay image get raymlops.runtime.LOCAL_RAY_ENV."""
    from raymlops.runtime import LOCAL_RAY_ENV

    config = _launcher()
    starts = config["head_start_ray_commands"][1:] + config["worker_start_ray_commands"][1:]
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    for key, value in LOCAL_RAY_ENV.items():
        assert all(f"{key}={value}" in c for c in starts), key
        assert f"{key}={value}" in dockerfile, key


def test_the_kuberay_pods_take_outside_traffic_on_serve_only() -> None:
    """The NetworkPolicy selects every pod KubeRay makes; only Serve's port is open to all."""
    (policy,) = [d for _, d in _manifests() if d["kind"] == "NetworkPolicy"]
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    ray_pods = {"app.kubernetes.io/created-by": "kuberay-operator"}
    assert policy["spec"]["podSelector"]["matchLabels"] == ray_pods
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    for rule in policy["spec"]["ingress"]:
        ports = {p["port"] for p in rule.get("ports", [])}
        if "from" not in rule:  # from anywhere
            assert ports == {8000}, "only Serve's HTTP port may be open to every source"
        elif not ports:  # every port: only the Ray pods themselves
            assert rule["from"] == [{"podSelector": {"matchLabels": ray_pods}}]
        else:
            assert 6379 not in ports, "the GCS is for the cluster's own pods"


def test_the_launcher_names_its_security_group_and_opens_no_port_to_the_world() -> None:
    group = _launcher()["provider"]["security_group"]
    assert group["GroupName"] == "raymlops-cluster"
    for permission in group.get("IpPermissions", []):
        ranges = [r.get("CidrIp") for r in permission.get("IpRanges", [])]
        assert "0.0.0.0/0" not in ranges, permission
