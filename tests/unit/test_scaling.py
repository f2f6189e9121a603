"""Workers per trial: the auto rule, placement before any work, scikit-learn beyond one worker,
and the GPU mapping of a data-parallel trial (pure; no Ray cluster)."""

from __future__ import annotations

import pytest

from raymlops.config import ResourcesConfig, TrainingConfig
from raymlops.training.models import FitOptions, TrialSpec, xgboost_params
from raymlops.training.scaling import (
    FOOTPRINT,
    NodeFacts,
    placement_problem,
    plan_workers,
    sklearn_problem,
    training_bytes,
    worker_memory,
)

GB = 2**30


def _node(name: str = "n1", cpu: float = 2, gpu: float = 0, memory_gb: float = 16) -> NodeFacts:
    return NodeFacts(name, f"10.0.0.{len(name)}", cpu=cpu, gpu=gpu, memory=memory_gb * GB)


def test_auto_is_one_worker_when_the_rows_fit_comfortably() -> None:
    """1M rows x 30 features: 0.23 GB as float64, x3 = 0.69 GB, well inside 8 GB."""
    plan = plan_workers(
        "auto", rows=1_000_000, n_features=30, resources=ResourcesConfig(), nodes=[_node()]
    )
    assert plan.workers == 1, plan.reason
    assert plan.worker_memory == 8 * GB, "a 1-CPU worker's share of a 2-CPU, 16 GB node"
    assert plan.footprint == int(FOOTPRINT * training_bytes(1_000_000, 30))
    assert plan.reason.startswith("auto:")
    assert "fit one worker" in plan.reason


def test_auto_takes_as_many_workers_as_hold_the_rows() -> None:
    """100M rows x 30 features x 8 bytes x 3 = 69 GB over 8 GB workers: 9 workers."""
    plan = plan_workers(
        "auto", rows=100_000_000, n_features=30, resources=ResourcesConfig(), nodes=[_node()]
    )
    assert plan.workers == 9, plan.reason
    assert "need 9 workers" in plan.reason


def test_memory_gb_sets_one_workers_memory_and_a_set_count_is_kept() -> None:
    small = ResourcesConfig(memory_gb=0.5)
    assert worker_memory(small, [_node()]) == GB // 2
    plan = plan_workers("auto", rows=10_000_000, n_features=9, resources=small, nodes=[_node()])
    assert plan.workers == 5, "2.24 GB of rows over 0.5 GB workers"
    assert plan_workers(3, rows=10, n_features=2, resources=small, nodes=[_node()]).workers == 3


def test_a_worker_gets_the_share_of_the_smallest_node_that_can_run_it() -> None:
    nodes = [_node("big", cpu=8, memory_gb=64), _node("small", cpu=4, memory_gb=8)]
    assert worker_memory(ResourcesConfig(cpu=2), nodes) == 4 * GB
    gpu_only = [_node("cpu", cpu=4), _node("gpu", cpu=4, gpu=1, memory_gb=32)]
    assert worker_memory(ResourcesConfig(cpu=1, gpu=1), gpu_only) == 8 * GB


def test_workers_that_fit_are_placed() -> None:
    nodes = [_node("a"), _node("b")]
    assert placement_problem(4, ResourcesConfig(), nodes) is None


def test_too_many_workers_name_the_missing_resources() -> None:
    problem = placement_problem(5, ResourcesConfig(cpu=1, gpu=1), [_node(cpu=2, gpu=1)])
    assert problem is not None
    assert "training.workers_per_trial: 5 workers of 1 CPU, 1 GPU each" in problem
    assert "room for 1 worker(s)" in problem
    assert "Missing: 3 CPU, 4 GPU" in problem, problem
    assert "Lower training.workers_per_trial" in problem


def test_enough_cpus_in_total_but_none_on_one_node_is_a_problem_too() -> None:
    problem = placement_problem(2, ResourcesConfig(cpu=2), [_node("a", cpu=1), _node("bb", cpu=3)])
    assert problem is not None
    assert "room for 1 worker(s)" in problem
    assert "no node has room for one more worker" in problem


def test_scikit_learn_beyond_one_workers_memory_is_refused_by_name() -> None:
    plan = plan_workers(
        "auto", rows=10_000_000, n_features=9, resources=ResourcesConfig(memory_gb=0.5), nodes=[]
    )
    problem = sklearn_problem(["xgboost", "random_forest", "logistic_regression"], plan)
    assert problem is not None
    assert problem.startswith("training.models: random_forest, logistic_regression train on one")
    assert "2.24 GB" in problem
    assert "512.0 MB" in problem
    assert sklearn_problem(["xgboost"], plan) is None, "XGBoost trains data-parallel"
    small = plan_workers(
        "auto", rows=1000, n_features=9, resources=ResourcesConfig(), nodes=[_node()]
    )
    assert sklearn_problem(["random_forest"], small) is None, "rows that fit one worker"


def test_workers_per_trial_is_auto_or_a_count() -> None:
    def training(value: object) -> TrainingConfig:
        return TrainingConfig.model_validate({"task": "regression", "workers_per_trial": value})

    assert TrainingConfig.model_validate({"task": "regression"}).workers_per_trial == "auto"
    assert training(4).workers_per_trial == 4
    for bad in (0, -1, 1.5, "2", True, None):
        with pytest.raises(ValueError, match="expected auto or a whole number of workers"):
            training(bad)


def test_a_gpu_trial_asks_train_for_gpus_and_xgboost_for_cuda() -> None:
    from raymlops.training.distributed import scaling_config

    resources = ResourcesConfig(cpu=2, gpu=1, memory_gb=4)
    scaling = scaling_config(3, resources)
    assert scaling.num_workers == 3
    assert scaling.use_gpu is True
    assert scaling.resources_per_worker == {"CPU": 2, "GPU": 1, "memory": 4 * GB}
    cpu_only = scaling_config(2, ResourcesConfig())
    assert cpu_only.use_gpu is False
    assert cpu_only.resources_per_worker == {"CPU": 1.0}
    spec = TrialSpec(0, "xgboost", {"max_depth": 3}, seed=1)
    assert xgboost_params(spec, FitOptions(task="classification", gpu=True))["device"] == "cuda"
