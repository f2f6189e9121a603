"""Pure parts of the cluster and jobs layer: the token file, node commands, excludes, entry
points, addresses and exit codes (no Ray, no processes)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from raymlops import cluster, jobs
from raymlops.cluster import ClusterError, ClusterState, NodeProcess, ensure_token, read_token
from raymlops.config import load_config
from raymlops.errors import ConfigError
from raymlops.jobs import JobError
from raymlops.storage import local_storage_warning
from tests.conftest import write_project


@pytest.fixture(autouse=True)
def _no_ambient_tokens(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAYMLOPS_HOME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


# -- token ---------------------------------------------------------------------------------------


def test_token_is_made_once_with_mode_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o000)  # the most permissive umask: the file must still be private
    try:
        path = ensure_token(tmp_path / "rm")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = path.read_text()
    assert len(token) == 64
    int(token, 16)  # 256 bits, hex
    assert ensure_token(tmp_path / "rm").read_text() == token, "a second up keeps the token"


def test_a_token_file_others_can_read_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = ensure_token(tmp_path)
    path.chmod(0o644)
    with pytest.raises(
        ClusterError, match=r"can be read by other users \(mode 644\); run `chmod 600"
    ):
        ensure_token(tmp_path)
    with pytest.raises(ClusterError, match="chmod 600"):
        read_token(tmp_path)


def test_token_lookup_order_env_then_path_then_raymlops_then_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "rm"
    assert read_token(home)[0] is None
    assert "RAY_AUTH_TOKEN" in read_token(home)[1], "the message lists where it looked"
    ray_default = Path(os.environ["HOME"]) / ".ray" / "auth_token"
    ray_default.parent.mkdir(parents=True)
    ray_default.write_text("ray-default\n")
    ray_default.chmod(0o600)
    assert read_token(home) == ("ray-default", str(ray_default))
    ours = ensure_token(home)
    assert read_token(home) == (ours.read_text(), str(ours))
    explicit = tmp_path / "explicit"
    explicit.write_text("from-path")
    explicit.chmod(0o600)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(explicit))
    assert read_token(home) == ("from-path", str(explicit))
    monkeypatch.setenv("RAY_AUTH_TOKEN", " from-env ")
    assert read_token(home) == ("from-env", "RAY_AUTH_TOKEN")


def test_raymlops_home_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cluster.raymlops_home() == tmp_path / "home" / ".raymlops"
    monkeypatch.setenv("RAYMLOPS_HOME", str(tmp_path / "x"))
    assert cluster.raymlops_home() == tmp_path / "x"


# -- node commands -------------------------------------------------------------------------------


def test_every_node_gets_its_own_ports_and_the_head_binds_the_dashboard_to_loopback() -> None:
    counter = iter(range(20000, 30000))
    nodes = cluster.plan_nodes(3, ports=lambda n: [next(counter) for _ in range(n)])
    assert [n.name for n in nodes] == ["head", "worker-1", "worker-2", "worker-3"]
    ports = [p for n in nodes for p in n.ports.values()]
    assert len(ports) == len(set(ports)), "no two nodes may share a port on one machine"
    head = cluster.node_command("ray", nodes[0], temp_dir="/t/h", gcs_address="127.0.0.1:1")
    assert head[:4] == ["ray", "start", "--block", "--head"]
    assert "--dashboard-host" in head
    assert head[head.index("--dashboard-host") + 1] == "127.0.0.1"
    assert "--num-cpus=0" in head, "the head only schedules"
    assert f"--dashboard-port={nodes[0].ports['dashboard-port']}" in head
    worker = cluster.node_command("ray", nodes[1], temp_dir="/t/1", gcs_address="127.0.0.1:1")
    assert worker[3:5] == ["--address", "127.0.0.1:1"]
    assert "--num-cpus=1" in worker
    assert "--temp-dir=/t/1" in worker
    assert not any(a.startswith("--dashboard-port") for a in worker)
    for command in (head, worker):  # every server of every node on loopback
        assert "--node-ip-address=127.0.0.1" in command


def test_loopback_stays_loopback_and_wildcards_become_loopback() -> None:
    from raymlops.raystart import keep_loopback, loopback_address

    outward = keep_loopback(lambda host: "192.0.2.7")
    assert outward("127.0.0.1") == "127.0.0.1"
    assert outward("::1") == "::1"
    assert outward("localhost") == "192.0.2.7", "a name goes to Ray's resolver"
    assert outward("10.1.2.3") == "192.0.2.7"
    assert loopback_address("[::]:0") == "127.0.0.1:0"
    assert loopback_address("0.0.0.0:8000") == "127.0.0.1:8000"
    assert loopback_address("10.1.2.3:9") == "10.1.2.3:9"


def test_cluster_up_refuses_haproxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """`cluster up`'s nodes do not run the loopback hook that keeps HAProxy on 127.0.0.1."""
    from raymlops.errors import UsageError
    from raymlops.runtime import refuse_haproxy

    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "1")
    with pytest.raises(UsageError, match="every network interface"):
        refuse_haproxy()
    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "0")
    refuse_haproxy()


def test_free_ports_are_distinct() -> None:
    ports = cluster._free_ports(12)
    assert len(set(ports)) == 12


def test_state_round_trips_and_a_dead_or_recycled_pid_is_not_ours(tmp_path: Path) -> None:
    me = NodeProcess("head", os.getpid(), cluster._start_time(os.getpid()) or 0.0, "log")
    state = ClusterState("127.0.0.1:1", "http://127.0.0.1:2", "/t", "/tok", 1.0, [me])
    state.save(tmp_path)
    loaded = ClusterState.load(tmp_path)
    assert loaded == state
    assert cluster._alive(me)
    recycled = NodeProcess("head", os.getpid(), me.started - 100, "log")
    assert not cluster._alive(recycled), "same PID, other start time: another process"
    assert cluster.session_processes({os.getsid(0)}), "this test runs in a session"


def test_down_and_status_without_a_cluster_say_how_to_start_one(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match=r"raymlops cluster up --workers 2"):
        cluster.down(tmp_path)
    with pytest.raises(ClusterError, match=r"no local cluster is running"):
        cluster.status(tmp_path)
    with pytest.raises(ClusterError, match="at least 1"):
        cluster.up(0, home=tmp_path)


# -- jobs ----------------------------------------------------------------------------------------


def test_entrypoints_use_jobs_scripts_when_present_else_the_cli(tmp_path: Path) -> None:
    assert (
        jobs.entrypoint("train", "p/raymlops.yaml", tmp_path, ["--promote"])
        == "python -m raymlops train --config p/raymlops.yaml --promote"
    )
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "retrain.py").write_text("")
    assert (
        jobs.entrypoint("retrain", "my proj/c.yaml", tmp_path, ["--parent", "v3"])
        == "python jobs/retrain.py --config 'my proj/c.yaml' --parent v3"
    ), "arguments are shell-quoted"
    with pytest.raises(
        JobError, match="unknown job kind 'deploy': choose one of train, retrain, predict"
    ):
        jobs.entrypoint("deploy", "c.yaml", tmp_path, [])


def test_excludes_leave_out_envs_registries_and_unread_data(tmp_path: Path) -> None:
    s3 = jobs.default_excludes(tmp_path, "s3://b/reg", "s3://b/data/*.parquet")
    assert {".venv/", ".git/", "**/__pycache__/", "/data/", ".raymlops/"} <= set(s3)
    local = jobs.default_excludes(
        tmp_path, str(tmp_path / "store"), str(tmp_path / "data" / "train.csv")
    )
    assert "/store/" in local, "a registry inside the working dir is not uploaded"
    assert "/data/" not in local, "data the config reads is uploaded with the job"


def _project(tmp_path: Path, storage: str, source: str = "./data/train.csv") -> Path:
    config = write_project(tmp_path / "proj", source=source)
    config.write_text(config.read_text().replace("storage: ./store", f"storage: {storage}"))
    return config


def test_plan_refuses_a_registry_that_would_be_written_into_the_uploaded_copy(
    tmp_path: Path,
) -> None:
    config = _project(tmp_path, "./store")
    with pytest.raises(
        JobError, match=r"storage './store' in .* is a relative folder.*s3://bucket/prefix"
    ):
        jobs.plan_job("train", config, working_dir=config.parent, address="http://10.0.0.9:8265")


def test_a_relative_registry_on_a_cluster_on_this_machine_becomes_absolute_in_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`raymlops init` writes `storage: ./.raymlops`; on the local multi-node cluster every node
    sees this machine's folders, so the job gets the absolute folder, and load_config in the
    job reads it from RAYMLOPS_STORAGE instead of the relative path in its uploaded copy."""
    config = _project(tmp_path, "./store")
    plan = jobs.plan_job(
        "train", config, working_dir=config.parent, address="http://127.0.0.1:8265"
    )
    absolute = str((config.parent / "store").resolve())
    assert plan.env_vars == {"RAYMLOPS_STORAGE": absolute}
    assert "/store/" in plan.excludes  # the registry itself is not uploaded
    copy = tmp_path / "job-copy"
    copy.mkdir()
    (copy / "raymlops.yaml").write_text(config.read_text())
    monkeypatch.setenv("RAYMLOPS_STORAGE", absolute)
    assert load_config(copy / "raymlops.yaml").storage == absolute


def test_plan_builds_the_job_and_warns_about_local_storage_on_a_remote_cluster(
    tmp_path: Path,
) -> None:
    config = _project(tmp_path, str(tmp_path / "registry"))
    plan = jobs.plan_job(
        "train",
        config,
        working_dir=tmp_path,
        extra=["--promote"],
        submission_id="fixed",
        address="http://10.0.0.9:8265",
    )
    assert plan.entrypoint == "python -m raymlops train --config proj/raymlops.yaml --promote"
    assert plan.submission_id == "fixed"
    assert any("not shared between nodes" in w for w in plan.warnings)
    assert jobs.plan_job("train", config, working_dir=tmp_path).submission_id.startswith(
        "raymlops-train-churn-"
    )


def test_plan_names_a_missing_config_or_one_outside_the_working_dir(tmp_path: Path) -> None:
    with pytest.raises(JobError, match=r"config .*nope\.yaml does not exist"):
        jobs.plan_job("train", tmp_path / "nope.yaml", working_dir=tmp_path)
    config = _project(tmp_path, "s3://b/r")
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(JobError, match="is outside the working dir"):
        jobs.plan_job("train", config, working_dir=tmp_path / "elsewhere")
    with pytest.raises(JobError, match="unknown job kind"):
        jobs.plan_job("serve", config, working_dir=tmp_path)


def test_jobs_address_comes_from_flag_env_or_local_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAYMLOPS_HOME", str(tmp_path))
    with pytest.raises(JobError, match=r"--address http://HOST:8265.*raymlops cluster up"):
        jobs.jobs_address(None)
    ClusterState("127.0.0.1:1", "http://127.0.0.1:4321", "/t", "/tok", 1.0, []).save(tmp_path)
    assert jobs.jobs_address(None) == "http://127.0.0.1:4321"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:8265")
    assert jobs.jobs_address(None) == "http://10.0.0.1:8265"
    assert jobs.jobs_address("https://ray.example:443") == "https://ray.example:443"
    with pytest.raises(JobError, match="Ray Client address"):
        jobs.jobs_address("ray://10.0.0.1:10001")


def test_exit_codes_mirror_the_final_status() -> None:
    assert jobs.exit_code_for("SUCCEEDED") == 0
    assert jobs.exit_code_for("FAILED", 3) == 3, "a data error inside the job stays exit 3"
    assert jobs.exit_code_for("FAILED", None) == 1
    assert jobs.exit_code_for("FAILED", 0) == 1, "failed is never 0"
    assert jobs.exit_code_for("STOPPED") == jobs.EXIT_STOPPED


def test_local_storage_warning_only_for_local_paths_on_clusters() -> None:
    assert local_storage_warning("/srv/reg", None) is None
    assert local_storage_warning("s3://b/reg", "http://10.0.0.1:8265") is None
    remote = local_storage_warning("/srv/reg", "http://10.0.0.1:8265")
    assert remote is not None
    assert "not shared between nodes" in remote
    loopback = local_storage_warning("/srv/reg", "http://127.0.0.1:8265")
    assert loopback is not None
    assert "this machine" in loopback


class _FakeInfo:
    def __init__(self, status: str, code: int | None, message: str = "") -> None:
        self.status, self.driver_exit_code, self.message = status, code, message


class _FakeRayClient:
    """The slice of JobSubmissionClient that follow() uses; its log stream breaks at once."""

    def __init__(self, statuses: list[str], code: int | None, logs: str) -> None:
        self.statuses, self.code, self.logs = statuses, code, logs

    def get_job_info(self, job_id: str) -> _FakeInfo:
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return _FakeInfo(status, self.code, "boom" if status == "FAILED" else "")

    def get_job_logs(self, job_id: str) -> str:
        return self.logs

    async def tail_job_logs(self, job_id: str):  # type: ignore[no-untyped-def]
        raise ConnectionResetError("proxy closed the websocket")
        yield ""  # pragma: no cover - makes this an async generator


def _jobs(fake: _FakeRayClient) -> jobs._Client:
    client = object.__new__(jobs._Client)
    client.address, client.token, client.token_source = "http://h:1", "t", "test"
    client.client = fake
    return client


def test_follow_mirrors_a_failure_with_the_last_log_lines_even_if_the_stream_breaks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jobs.time, "sleep", lambda s: None)
    logs = "\n".join(f"line {i}" for i in range(40)) + "\nDataValidationError: column 'x'\n"
    written: list[str] = []
    fake = _FakeRayClient(["RUNNING", "RUNNING", "FAILED"], 3, logs)
    with pytest.raises(jobs.JobFailedError) as failed:
        jobs.follow(_jobs(fake), "job-1", written.append)
    assert failed.value.exit_code == 3
    message = str(failed.value)
    assert "job job-1 FAILED (exit code 3): boom" in message
    assert "line 16" in message
    assert "line 15" not in message, "the last 25 lines only"
    assert "column 'x'" in message
    assert "log stream lost" in written[0], "the user is told why the logs come at the end"
    assert written[-1] == logs


def test_follow_returns_quietly_on_success() -> None:
    info = jobs.follow(_jobs(_FakeRayClient(["SUCCEEDED"], 0, "ok\n")), "job-2", lambda s: None)
    assert jobs.status_name(info.status) == "SUCCEEDED"


def test_secrets_are_not_uploaded_with_a_job(tmp_path: Path) -> None:
    """The working dir is matched with Ray's own exclude matcher (what `job submit` uploads)."""
    import zipfile

    from ray._private.runtime_env.packaging import create_package

    files = {
        "secret": [
            ".env",
            ".aws/credentials",
            ".netrc",
            "id_rsa",
            "keys/id_ed25519.pub",
            "deploy/server.pem",
            "tls.key",
            "api.token",
            "auth_token",
            "gcp-credentials.json",
            "secrets/db-password.txt",
            "conf/secrets/s3.yaml",
            "kubeconfig",
        ],
        "uploaded": ["raymlops.yaml", "jobs/train.py", "data/train.csv", "features/keyboard.py"],
    }
    for name in files["secret"] + files["uploaded"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    excludes = jobs.default_excludes(tmp_path, "s3://b/reg", str(tmp_path / "data" / "train.csv"))
    # the package Ray itself builds from the working dir (the root is matched too)
    package = tmp_path.parent / f"{tmp_path.name}-package.zip"
    create_package(str(tmp_path), package, include_gitignore=True, excludes=excludes)
    uploaded = set(zipfile.ZipFile(package).namelist())
    assert uploaded == set(files["uploaded"]), "secrets left out, everything else uploaded"


def test_a_local_ray_uses_a_private_token_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from raymlops.runtime import private_token_env

    for key in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    private_token_env()  # no token yet: made where Ray looks, 0600
    token = tmp_path / "user" / ".ray" / "auth_token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert len(token.read_text().strip()) == 64
    token.chmod(0o644)  # as Ray writes it
    private_token_env()
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    # a token file the user names must be private too
    shared = tmp_path / "shared_token"
    shared.write_text("t" * 64)
    shared.chmod(0o644)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(shared))
    with pytest.raises(ClusterError, match="chmod 600"):
        private_token_env()


def test_the_storage_lookup_uses_the_configs_alias_free_loader(tmp_path: Path) -> None:
    """jobs reads `storage:` from the raw YAML (before RAYMLOPS_STORAGE replaces it): the same
    loader as load_config, so an anchor or alias (an "alias bomb") is refused there too."""
    config = tmp_path / "raymlops.yaml"
    config.write_text("storage: &where ./store\nname: *where\n")
    with pytest.raises(ConfigError, match="anchors and aliases"):
        jobs._declared_storage(config)
    config.write_text("storage: ./store\n")
    assert jobs._declared_storage(config) == "./store"
