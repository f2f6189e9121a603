"""How many workers a trial gets, and whether the cluster can place them (pure; no Ray).

``training.workers_per_trial: auto`` is 1 when the training rows fit comfortably in one
worker's memory, else as many workers as it takes to hold them (:func:`plan_workers`).
"Comfortably" means :data:`FOOTPRINT` times the rows as float64 (features and label): the
worker's own arrays, XGBoost's quantised ``DMatrix`` and its gradient buffers, with headroom.
A worker's memory is ``resources_per_trial.memory_gb`` when set, else its share of the
smallest node that can run it (the node's memory times ``cpu`` over the node's CPUs).

scikit-learn models cannot train data-parallel: beyond one worker's memory the run is refused
(:func:`sklearn_problem`), before any trial starts, rather than trained on a sample.

Example:
    >>> node = NodeFacts("n1", "10.0.0.1", cpu=2, gpu=0, memory=16 * 2**30)
    >>> plan = plan_workers("auto", rows=1_000_000, n_features=30,
    ...                     resources=ResourcesConfig(), nodes=[node])
    >>> plan.workers, plan.reason.split(":")[0]
    (1, 'auto')
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from raymlops.config import ResourcesConfig

__all__ = [
    "FOOTPRINT",
    "NodeFacts",
    "WorkerPlan",
    "placement_problem",
    "plan_workers",
    "sklearn_problem",
    "training_bytes",
    "worker_memory",
]

#: bytes a worker holds per byte of float64 training rows (arrays, DMatrix, headroom)
FOOTPRINT = 3.0
_GB = 2**30


@dataclass(frozen=True)
class NodeFacts:
    """One alive node's total resources (Ray's logical ``memory`` in bytes)."""

    node_id: str
    address: str
    cpu: float
    gpu: float
    memory: float


@dataclass(frozen=True)
class WorkerPlan:
    """Workers per trial and why: the requested value, the rows' estimated footprint and
    one worker's memory (bytes)."""

    requested: int | str
    workers: int
    footprint: int
    worker_memory: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _size(n: float) -> str:
    return (
        f"{n / _GB:.2f} GB"
        if n >= _GB
        else f"{n / 2**20:.1f} MB"
        if n >= 2**20
        else f"{n / 1024:.0f} KB"
    )


def training_bytes(rows: int, n_features: int) -> int:
    """The training rows as float64 features and label."""
    return int(rows) * (int(n_features) + 1) * 8


def worker_memory(resources: ResourcesConfig, nodes: list[NodeFacts]) -> int:
    """The memory one worker may use: ``memory_gb``, else its share of the smallest node
    that has the CPUs (and GPUs) of one worker."""
    if resources.memory_gb is not None:
        return int(resources.memory_gb * _GB)
    shares = [
        node.memory * min(1.0, resources.cpu / node.cpu)
        for node in nodes
        if node.cpu >= resources.cpu and node.gpu >= resources.gpu
    ]
    return int(min(shares)) if shares else 0


def plan_workers(
    requested: int | str,
    *,
    rows: int,
    n_features: int,
    resources: ResourcesConfig,
    nodes: list[NodeFacts],
) -> WorkerPlan:
    """The workers of a trial for ``requested`` (``auto`` or a number)."""
    footprint = int(FOOTPRINT * training_bytes(rows, n_features))
    memory = worker_memory(resources, nodes)
    if requested != "auto":
        workers = int(requested)
        return WorkerPlan(requested, workers, footprint, memory, f"set: {workers}")
    if memory <= 0:
        return WorkerPlan(requested, 1, footprint, memory, "auto: no node can run a worker")
    workers = max(1, math.ceil(footprint / memory))
    rows_size = f"{_size(footprint)} of rows (x{FOOTPRINT:g})"
    if workers == 1:
        reason = f"auto: {rows_size} fit one worker's {_size(memory)}"
    else:
        reason = f"auto: {rows_size} need {workers} workers of {_size(memory)}"
    return WorkerPlan(requested, workers, footprint, memory, reason)


def _fits(node: NodeFacts, resources: ResourcesConfig) -> int:
    """How many workers of ``resources`` one node holds."""
    counts = [math.floor(node.cpu / resources.cpu + 1e-9)]
    if resources.gpu > 0:
        counts.append(math.floor(node.gpu / resources.gpu + 1e-9))
    if resources.memory_gb is not None:
        counts.append(math.floor(node.memory / (resources.memory_gb * _GB) + 1e-9))
    return max(0, min(counts))


def placement_problem(
    workers: int, resources: ResourcesConfig, nodes: list[NodeFacts]
) -> str | None:
    """Why the cluster cannot place ``workers`` workers of ``resources`` at once (None: it
    can). Ray Train starts a trial only when all its workers are placed, so a trial that
    cannot be placed would wait forever."""
    room = sum(_fits(node, resources) for node in nodes)
    if room >= workers:
        return None
    need = {"CPU": workers * resources.cpu}
    have = {"CPU": sum(n.cpu for n in nodes)}
    if resources.gpu > 0:
        need["GPU"] = workers * resources.gpu
        have["GPU"] = sum(n.gpu for n in nodes)
    if resources.memory_gb is not None:
        need["memory GB"] = workers * resources.memory_gb
        have["memory GB"] = sum(n.memory for n in nodes) / _GB
    missing = (
        ", ".join(f"{need[k] - have[k]:g} {k}" for k in need if need[k] > have[k] + 1e-9)
        or "none in total, but no node has room for one more worker"
    )
    each = ", ".join(f"{v / workers:g} {k}" for k, v in need.items())
    totals = ", ".join(f"{v:g} {k}" for k, v in have.items())
    return (
        f"training.workers_per_trial: {workers} workers of {each} each cannot be placed: the "
        f"cluster has {totals} on {len(nodes)} node(s), room for {room} worker(s). Missing: "
        f"{missing}. Lower training.workers_per_trial (or resources_per_trial) or add nodes."
    )


def sklearn_problem(models: list[str], plan: WorkerPlan) -> str | None:
    """Why the scikit-learn models of ``models`` cannot train here (None: they can): they fit
    on one worker, and the training rows need more than one."""
    sklearn = [m for m in models if m != "xgboost"]
    if not sklearn or plan.footprint <= plan.worker_memory or plan.worker_memory <= 0:
        return None
    return (
        f"training.models: {', '.join(sklearn)} train on one worker, and the training rows "
        f"need {_size(plan.footprint)} (x{FOOTPRINT:g} the float64 rows) where one worker "
        f"has {_size(plan.worker_memory)}. Train xgboost only (it trains data-parallel "
        "with workers_per_trial), give workers more memory (resources_per_trial.memory_gb, "
        "bigger nodes) or sample the data."
    )
