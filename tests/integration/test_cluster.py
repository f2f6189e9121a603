"""A local multi-node cluster through the CLI: up with two workers and token auth, a train job
spread over the nodes, the Jobs API's refusals, the bad inputs of issue 7, and down leaving no
process behind.

Every command runs as a subprocess (``python -m raymlops ...``), as a user would run it, with
its own ``RAYMLOPS_HOME`` so the user's ``~/.raymlops`` is never touched. The tests share one
cluster (starting one takes ~20 s here) and run in file order; the last one stops it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from raymlops import cluster
from raymlops.examples import make_churn
from raymlops.raystart import LOOPBACK_ENV
from raymlops.runtime import HAPROXY_INGRESS_ENV, LOCAL_RAY_ENV
from tests.conftest import XOR_COLUMNS, write_project, xor_frame

pytestmark = pytest.mark.slow
REPO = Path(__file__).parents[2]
SESSION_RAY_ENV = {*LOOPBACK_ENV, *LOCAL_RAY_ENV, *HAPROXY_INGRESS_ENV}


@dataclass
class LocalCluster:
    home: Path
    env: dict[str, str]
    state: cluster.ClusterState
    up_output: str
    up_seconds: float

    @property
    def token(self) -> str:
        return Path(self.state.token_path).read_text().strip()


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        # the test session's own Ray sets these (its token and address, and the settings
        # ensure_ray gives a local Ray's processes); a user's shell would not have them, and
        # the commands must set what they need themselves
        if not k.startswith(("RAY_AUTH", "RAY_ADDRESS")) and k not in SESSION_RAY_ENV
    }
    env.update(RAYMLOPS_HOME=str(home), PYTHONPATH=str(REPO), COLUMNS="200", **extra)
    return env


def raymlops(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raymlops", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    home = tmp_path_factory.mktemp("raymlops-home")
    env = _env(home)
    started = time.perf_counter()
    result = raymlops("cluster", "up", "--workers", "2", env=env, timeout=240)
    seconds = time.perf_counter() - started
    try:
        assert result.returncode == 0, f"cluster up failed:\n{result.stdout}\n{result.stderr}"
        state = cluster.ClusterState.load(home)
        assert state is not None
        yield LocalCluster(home, env, state, result.stdout + result.stderr, seconds)
    finally:
        state = cluster.ClusterState.load(home)
        if state is not None:  # a test failed before the down test
            cluster.down(home)
        if result.returncode == 0:  # Ray's logs of this cluster: not kept between test runs
            shutil.rmtree(cluster._temp_dir(home), ignore_errors=True)


def _listen_addresses(port: int) -> set[str]:
    """Local addresses listening on ``port`` (IPv4, from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def _get(url: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10):
            return 200
    except urllib.error.HTTPError as exc:
        return exc.code


def test_up_starts_head_and_two_workers_with_token_auth_on_loopback(
    local_cluster: LocalCluster,
) -> None:
    state = local_cluster.state
    assert f"dashboard  {state.dashboard_url}" in local_cluster.up_output
    assert state.dashboard_url.startswith("http://127.0.0.1:")
    assert "raymlops job submit train" in local_cluster.up_output, "it prints the next commands"
    # three `ray start` processes, three alive nodes, 2 CPUs (the head schedules only)
    assert [n.name for n in state.nodes] == ["head", "worker-1", "worker-2"]
    nodes = cluster.alive_nodes(state.dashboard_url, local_cluster.token)
    assert len(nodes) == 3
    assert sum(float(n["resources_total"].get("CPU", 0)) for n in nodes) == 2
    # the dashboard and Jobs API listen on 127.0.0.1 only
    port = int(state.dashboard_url.rsplit(":", 1)[1])
    assert _listen_addresses(port) == {"127.0.0.1"}
    # the token file is private
    assert os.stat(state.token_path).st_mode & 0o777 == 0o600
    assert Path(state.token_path).parent == local_cluster.home


def test_the_cluster_does_not_become_the_machines_current_ray(local_cluster: LocalCluster) -> None:
    import ray

    gcs_port = local_cluster.state.gcs_address.rsplit(":", 1)[1]
    current = Path("/tmp/ray/ray_current_cluster")
    if current.exists():
        assert not current.read_text().strip().endswith(f":{gcs_port}"), (
            "a plain ray.init() on this machine would join the raymlops cluster"
        )
    # this test session's own Ray (tests/integration/conftest.py) is another cluster
    assert not ray.get_runtime_context().gcs_address.endswith(f":{gcs_port}")


def test_up_on_a_running_cluster_says_so_and_fails(local_cluster: LocalCluster) -> None:
    result = raymlops("cluster", "up", "--workers", "1", env=local_cluster.env)
    assert result.returncode == 2
    assert "already running" in result.stderr
    assert local_cluster.state.dashboard_url in result.stderr
    status = raymlops("cluster", "status", env=local_cluster.env)
    assert status.returncode == 0, status.stderr
    assert "3 node(s) alive, 2 CPU in all" in status.stdout


def test_the_jobs_api_refuses_calls_without_the_right_token(local_cluster: LocalCluster) -> None:
    url = f"{local_cluster.state.dashboard_url}/api/jobs/"
    assert _get(url, None) == 401
    assert _get(url, "0" * 64) == 403
    assert _get(url, local_cluster.token) == 200


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project the package has never seen: churn CSV inside, registry at an absolute path."""
    root = tmp_path_factory.mktemp("cluster-project")
    (root / "proj" / "data").mkdir(parents=True)
    make_churn(40000, seed=5).to_csv(root / "proj" / "data" / "train.csv", index=False)
    # trials of seconds, all run to the end (fifo): with trials shorter than an actor's start
    # on a busy machine, Tune reused the first actor for every trial, all on one node (seen
    # again in CI with 200 rounds, once training got faster: trials of 0.5-1 s)
    config = write_project(
        root / "proj",
        models="[xgboost]",
        search="{num_samples: 8, max_concurrent: 2, scheduler: fifo, max_boosting_rounds: 800,"
        " rounds_per_report: 10, time_budget_s: 300}",
    )
    config.write_text(
        config.read_text().replace("storage: ./store", f"storage: {root / 'registry'}")
    )
    return config


def _jobs_with_id(state: cluster.ClusterState, token: str, submission_id: str) -> int:
    request = urllib.request.Request(
        f"{state.dashboard_url}/api/jobs/", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        listed = json.loads(response.read())
    return sum(1 for job in listed if job.get("submission_id") == submission_id)


def test_train_job_registers_a_version_with_trials_on_both_workers(
    local_cluster: LocalCluster, project: Path
) -> None:
    # given a never-seen project, when its train job is submitted through the CLI
    started = time.perf_counter()
    result = raymlops(
        "job", "submit", "train", "--config", "raymlops.yaml", "--submission-id", "train-1",
        "--", "--promote",
        env=local_cluster.env, cwd=project.parent, timeout=400,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"the train job failed:\n{output[-4000:]}"
    print(f"\ncluster up {local_cluster.up_seconds:.1f}s; train job {seconds:.1f}s")

    # then the logs were followed, the registry has a version, and trials ran on two nodes
    assert "churn v1 registered and promoted to champion" in output
    assert "job train-1 SUCCEEDED" in output
    assert "local folder: fine for a cluster whose nodes all run on this machine" in output
    from raymlops.config import load_config
    from raymlops.pipeline import open_registry
    from raymlops.registry.bundle import BundleReader

    registry = open_registry(load_config(project))
    assert registry.versions() == ["v1"]
    assert registry.verify("v1").ok
    trials = BundleReader(registry, "v1").trials()
    print("trial seconds:", [round(t["time_s"], 1) for t in trials])
    nodes = {t["node_id"] for t in trials}
    lineage = BundleReader(registry, "v1").lineage()
    assert len(nodes) == 2, f"8 trials, 2 at a time on two 1-CPU workers: nodes {nodes}"
    assert set(lineage["ray"]["nodes"]) == nodes
    worker_ids = {
        n["node_id"]
        for n in cluster.alive_nodes(local_cluster.state.dashboard_url, local_cluster.token)
        if not n.get("is_head_node")
    }
    assert nodes == worker_ids, "trials ran on the workers, not the 0-CPU head"


def test_a_data_parallel_train_job_trains_one_trial_on_both_workers(
    local_cluster: LocalCluster, tmp_path: Path
) -> None:
    """Issue 11's "done when": ``raymlops job submit train`` on the 2-node cluster runs a trial
    over 2 Ray Train workers, one on each 1-CPU node, each holding part of the rows, and the
    version's lineage names both nodes."""
    root = tmp_path / "dp"
    (root / "data").mkdir(parents=True)
    xor_frame(2000, seed=5).to_csv(root / "data" / "train.csv", index=False)
    config = write_project(
        root,
        columns=XOR_COLUMNS,
        target="label",
        models="[xgboost]",
        search="{num_samples: 1, max_concurrent: 1, max_boosting_rounds: 20, "
        "rounds_per_report: 10, seed: 1, time_budget_s: 300}",
        extra="  workers_per_trial: 2\n",
    )
    config.write_text(
        config.read_text().replace("storage: ./store", f"storage: {tmp_path / 'registry'}")
    )
    result = raymlops(
        "job", "submit", "train", "--config", "raymlops.yaml", "--submission-id", "train-dp",
        env=local_cluster.env, cwd=root, timeout=400,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"the train job failed:\n{output[-4000:]}"
    from raymlops.config import load_config
    from raymlops.pipeline import open_registry
    from raymlops.registry.bundle import BundleReader

    lineage = BundleReader(open_registry(load_config(config)), "v1").lineage()
    trial = lineage["trial"]
    assert trial["workers"] == 2, trial
    rows = [n["fit_rows"] for n in trial["nodes"]]
    assert all(0 < r < sum(rows) for r in rows), f"no worker holds every row: {rows}"
    worker_ids = {
        n["node_id"]
        for n in cluster.alive_nodes(local_cluster.state.dashboard_url, local_cluster.token)
        if not n.get("is_head_node")
    }
    assert {n["node_id"] for n in trial["nodes"]} == worker_ids, "one worker on each node"
    assert worker_ids <= set(lineage["ray"]["nodes"]), "lineage names both nodes"


def test_the_tune_benchmark_runs_its_searches_on_the_cluster_with_address(
    local_cluster: LocalCluster, tmp_path: Path
) -> None:
    """``python -m benchmarks --suite tune --quick --address``: Tune's trials (raymlops's and
    the stock ASHA script's) on the cluster's workers, the process pool here, and the files
    every quick suite writes (this is CI's run of the tune suite)."""
    from raymlops.raystart import LOOPBACK_ENV
    from tests.integration.test_benchmarks import check_quick_result

    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--suite", "tune", "--quick",
         "--address", local_cluster.state.gcs_address, "--out", str(tmp_path)],
        # a user's shell: not this session's Ray's loopback setting (joining must set it itself)
        env={k: v for k, v in local_cluster.env.items() if k not in LOOPBACK_ENV},
        cwd=REPO, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = check_quick_result("tune", tmp_path)
    summary = result["extra"]["tune_overhead"]["summary"]
    assert summary["address"] == local_cluster.state.gcs_address
    worker_ids = {
        n["node_id"]
        for n in cluster.alive_nodes(local_cluster.state.dashboard_url, local_cluster.token)
        if not n.get("is_head_node")
    }
    assert set(summary["trials_per_node"]) <= worker_ids, "trials on the workers (head: 0 CPUs)"
    assert sum(summary["trials_per_node"].values()) == summary["trials"]
    assert any("--address" in note for note in result["notes"])


def test_the_same_submission_id_twice_makes_one_job(
    local_cluster: LocalCluster, project: Path
) -> None:
    result = raymlops(
        "job", "submit", "train", "--config", "raymlops.yaml", "--submission-id", "train-1",
        env=local_cluster.env, cwd=project.parent,
    )  # fmt: skip
    assert result.returncode == 2
    assert "job train-1 already exists" in result.stderr
    assert "SUCCEEDED" in result.stderr
    assert _jobs_with_id(local_cluster.state, local_cluster.token, "train-1") == 1
    status = raymlops("job", "status", "train-1", env=local_cluster.env)
    assert status.returncode == 0
    assert "SUCCEEDED" in status.stdout


def test_a_failing_job_exits_non_zero_with_its_last_log_lines(
    local_cluster: LocalCluster, project: Path
) -> None:
    # given data that breaks the schema: the job's own CLI exits 3
    bad = project.parent / "data" / "bad.csv"
    frame = make_churn(200, seed=1).astype({"tenure_months": object})
    frame.loc[7, "tenure_months"] = "seven"
    frame.to_csv(bad, index=False)
    config = project.parent / "bad.yaml"
    config.write_text(project.read_text().replace("./data/train.csv", "./data/bad.csv"))
    result = raymlops(
        "job", "submit", "train", "--config", "bad.yaml", env=local_cluster.env,
        cwd=project.parent, timeout=300,
    )  # fmt: skip
    assert result.returncode == 3, f"exit code mirrors the job's:\n{result.stderr[-3000:]}"
    assert "FAILED (exit code 3)" in result.stderr
    assert "last 25 log lines" in result.stderr
    assert "tenure_months" in result.stderr.split("last 25 log lines")[1], "the cause is shown"


def test_bad_inputs_exit_2_naming_the_problem(
    local_cluster: LocalCluster, project: Path, tmp_path: Path
) -> None:
    cwd = project.parent
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{sock.getsockname()[1]}"
    unreachable = raymlops(
        "job", "submit", "train", "--config", "raymlops.yaml", "--address", nowhere,
        env=local_cluster.env, cwd=cwd,
    )  # fmt: skip
    assert unreachable.returncode == 2
    assert f"cannot reach the Ray Jobs API at {nowhere}" in unreachable.stderr
    assert "raymlops cluster up" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr

    # no token anywhere: an empty raymlops folder and HOME
    empty = _env(tmp_path / "nothing", HOME=str(tmp_path / "nohome"))
    address = local_cluster.state.dashboard_url
    missing = raymlops("job", "status", "train-1", "--address", address, env=empty)
    assert missing.returncode == 2
    assert "refused the request (401 unauthorized): no token was sent" in missing.stderr
    assert "RAY_AUTH_TOKEN" in missing.stderr
    assert "Traceback" not in missing.stderr
    wrong = raymlops(
        "job", "submit", "train", "--config", "raymlops.yaml", "--address", address,
        env={**empty, "RAY_AUTH_TOKEN": "f" * 64}, cwd=cwd,
    )  # fmt: skip
    assert wrong.returncode == 2
    assert "(403 forbidden): the token from RAY_AUTH_TOKEN was refused" in wrong.stderr

    kind = raymlops(
        "job", "submit", "deploy", "--config", "raymlops.yaml", env=local_cluster.env, cwd=cwd
    )
    assert kind.returncode == 2
    assert "unknown job kind 'deploy'" in kind.stderr
    config = raymlops(
        "job", "submit", "train", "--config", "nope.yaml", env=local_cluster.env, cwd=cwd
    )
    assert config.returncode == 2
    assert "config nope.yaml does not exist" in config.stderr
    unknown = raymlops("job", "logs", "no-such-job", env=local_cluster.env)
    assert unknown.returncode == 2
    assert "no job 'no-such-job'" in unknown.stderr


def test_down_leaves_no_process_it_started(local_cluster: LocalCluster) -> None:
    state = local_cluster.state
    sessions = {n.pid for n in state.nodes}
    before = cluster.session_processes(sessions)
    assert len(before) > 10, "gcs, raylets, dashboard, agents, workers were running"
    result = raymlops("cluster", "down", env=local_cluster.env)
    assert result.returncode == 0, result.stderr
    assert "local cluster stopped" in result.stdout
    assert cluster.session_processes(sessions) == []
    # nothing of this cluster anywhere on the machine, whatever its session
    marker = state.temp_dir.encode()
    left = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker in cmdline.read_bytes():
                left.append(cmdline.parent.name)
        except OSError:
            continue
    assert left == [], f"processes of the cluster still run: {left}"
    assert _listen_addresses(int(state.dashboard_url.rsplit(":", 1)[1])) == set()
    status = raymlops("cluster", "status", env=local_cluster.env)
    assert status.returncode == 2
    assert "no local cluster is running" in status.stderr
