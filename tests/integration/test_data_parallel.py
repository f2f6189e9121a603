"""Data-parallel XGBoost trials (Ray Train V2 inside Tune), on the session's Ray: the same
config and data give the same trial and metric with 2 workers, lineage names the workers and
their nodes; a set worker count the cluster cannot place and scikit-learn rows beyond one
worker's memory fail before training; a worker that dies fails its trial only."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import ray

from raymlops.cli import main
from raymlops.config import TrainingConfig, load_config
from raymlops.errors import ResourcesError
from raymlops.pipeline import open_registry
from raymlops.registry.bundle import BundleReader
from raymlops.training.distributed import Shards
from raymlops.training.search import DataParallel, run_search
from tests.conftest import XOR_COLUMNS, write_project, xor_frame
from tests.helpers import wait_for_condition

#: 1600 training rows x (3 features + label) x 8 bytes x 3 = 154 KB: over 0.0001 GB (107 KB),
#: so ``workers_per_trial: auto`` gives each trial 2 workers
_TWO_WORKERS = "  workers_per_trial: auto\n  resources_per_trial: {cpu: 1, memory_gb: 0.0001}\n"
#: seed 1 draws a depth-5 tree (depth 2 cannot split an interaction of two features)
_SEARCH = (
    "{num_samples: 1, max_concurrent: 1, max_boosting_rounds: 20, rounds_per_report: 10, "
    "seed: 1, time_budget_s: 300}"
)


def _project(root: Path, *, models: str = "[xgboost]", extra: str = _TWO_WORKERS) -> Path:
    (root / "data").mkdir(parents=True, exist_ok=True)
    xor_frame(2000, seed=5).to_csv(root / "data" / "train.csv", index=False)
    return write_project(
        root, columns=XOR_COLUMNS, target="label", models=models, search=_SEARCH, extra=extra
    )


def test_two_workers_train_the_same_model_twice_and_lineage_names_them(tmp_path: Path) -> None:
    # given: a config whose training rows need two workers (auto)
    config_path = _project(tmp_path)
    # when: it trains twice
    assert main(["train", "--config", str(config_path)]) == 0
    assert main(["train", "--config", str(config_path)]) == 0
    # then: each version's trial ran on 2 workers, each holding part of the rows
    registry = open_registry(load_config(config_path))
    first, second = BundleReader(registry, "v1"), BundleReader(registry, "v2")
    lineage = first.lineage()
    assert lineage["workers_per_trial"]["requested"] == "auto"
    assert lineage["workers_per_trial"]["workers"] == 2, lineage["workers_per_trial"]
    trial = lineage["trial"]
    assert trial["workers"] == 2
    assert [n["rank"] for n in trial["nodes"]] == [0, 1]
    rows = [n["fit_rows"] for n in trial["nodes"]]
    assert all(0 < r < sum(rows) for r in rows), f"no worker holds every row: {rows}"
    assert all(n["peak_rss"] > 0 for n in trial["nodes"]), "each worker's peak memory"
    assert {n["node_id"] for n in trial["nodes"]} <= set(lineage["ray"]["nodes"])
    assert lineage["ray"]["addresses"], "the nodes' addresses are recorded"
    assert lineage["ray"]["workers_per_trial"] == 2
    # and: the same trial, validation score and holdout metrics both times
    again = second.lineage()
    assert again["trial"]["params"] == trial["params"]
    assert again["trial"]["validation_score"] == trial["validation_score"]
    assert second.metrics()["holdout"] == first.metrics()["holdout"]
    assert first.metrics()["holdout"]["roc_auc"] > 0.8, "two workers learn the interaction"


def test_more_workers_than_the_cluster_has_fail_before_reading_the_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given: 64 workers of 1 CPU on the session's small cluster, and data whose header is right
    # (the check before Ray passes) but whose rows cannot be read
    config_path = _project(tmp_path, extra="  workers_per_trial: 64\n")
    data = tmp_path / "data" / "train.csv"
    data.write_text(data.read_text().splitlines()[0] + "\n1\n")
    # when / then: exit 5 naming what is missing, not the data's exit 3, nothing registered
    assert main(["train", "--config", str(config_path)]) == ResourcesError.exit_code
    err = capsys.readouterr().err
    cpus = int(ray.cluster_resources()["CPU"])
    assert "training.workers_per_trial: 64 workers of 1 CPU each cannot be placed" in err
    assert f"Missing: {64 - cpus} CPU" in err, err
    assert open_registry(load_config(config_path)).versions() == []


def test_scikit_learn_rows_beyond_one_worker_are_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given: rows that need two workers, and a model that trains on one
    config_path = _project(tmp_path, models="[xgboost, logistic_regression]")
    # when / then: refused by name (exit 5), nothing trained or registered
    assert main(["train", "--config", str(config_path)]) == ResourcesError.exit_code
    captured = capsys.readouterr()
    assert "training.models: logistic_regression train on one worker" in captured.err
    assert "need 2 workers" in captured.err
    assert "search (Ray Tune)" not in captured.out
    assert open_registry(load_config(config_path)).versions() == []


def _tables(x: np.ndarray, y: np.ndarray, blocks: int) -> list[ray.ObjectRef]:
    from ray.data.extensions import ArrowTensorArray

    return [
        ray.put(pa.table({"x": ArrowTensorArray.from_numpy(xs), "y": ys}))
        for xs, ys in zip(np.array_split(x, blocks), np.array_split(y, blocks), strict=True)
    ]


def _kill_first_train_worker(killed: list[int], stop: threading.Event) -> None:
    """SIGKILL a Ray Train worker process of this session's Ray once it trains: its worker
    group has started and the split of its dataset shards (a ``SplitCoordinator``) exists.
    (A worker killed while the group starts is restarted by Ray Train, as it should be.)"""
    from ray.util.state import list_actors

    address = ray.get_runtime_context().gcs_address  # this session's Ray, not another's

    def alive(name: str) -> list[int]:
        actors = list_actors(
            address=address, filters=[("class_name", "=", name), ("state", "=", "ALIVE")]
        )
        return [a.pid for a in actors if a.pid]

    def training_worker() -> bool:
        if stop.is_set():
            return True
        pids = alive("RayTrainWorker") if alive("SplitCoordinator") else []
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
        return bool(pids)

    wait_for_condition(
        training_worker, timeout_s=120, interval_s=0.2, message="a training Ray Train worker"
    )


def test_a_worker_that_dies_fails_its_trial_and_the_search_finishes_without_it() -> None:
    # given: an XGBoost trial over 2 workers and a logistic regression trial after it
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 4))
    y = ((x[:, 0] * x[:, 1] > 0) ^ (rng.random(20_000) < 0.1)).astype(np.int64)
    fit, valid = (x[:16_000], y[:16_000]), (x[16_000:], y[16_000:])
    shards = Shards.from_tables(_tables(*fit, 4), _tables(*valid, 4))
    training = TrainingConfig.model_validate(
        {
            "task": "classification",
            "models": ["xgboost", "logistic_regression"],
            "search": {"num_samples": 2, "max_concurrent": 1, "max_boosting_rounds": 500},
        }
    )
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_first_train_worker, args=(killed, stop), daemon=True)
    killer.start()
    # when: a worker of the XGBoost trial is killed while it runs
    try:
        result = run_search(
            training,
            fit,
            valid,
            n_classes=2,
            verbose=0,
            keep_models=True,
            parallel=DataParallel(shards, workers=2, n_features=4),
        )
    finally:
        stop.set()
        killer.join(timeout=30)
    # then: that trial errored and kept no model; the other finished and is the best
    assert killed, "a Ray Train worker was killed"
    dead, other = result.trials
    assert dead.status == "error", dead
    assert dead.model_path is None
    assert other.status == "done", other.error
    assert result.best.index == other.index
    assert result.best.model_path is not None
