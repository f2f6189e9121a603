"""Stage 4, register: lineage, the version bundle, and promotion when asked and earned.

Example:
    >>> version = register_version(config, registry, prepared, selected, evaluation, StageLog())  # doctest: +SKIP
    >>> version.name  # doctest: +SKIP
    'v3'
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pandas as pd

from raymlops.config import ProjectConfig, config_hash
from raymlops.data.checks import ChecksReport
from raymlops.lineage import code_version, package_versions
from raymlops.registry import Registry
from raymlops.registry.bundle import BundleReader, VersionBundle
from raymlops.schema import Schema
from raymlops.training.evaluate import Evaluation
from raymlops.training.prepare import Prepared
from raymlops.training.select import Selected
from raymlops.training.stages import StageLog

__all__ = ["Registered", "build_lineage", "promote", "register_version"]


@dataclass(frozen=True)
class Registered:
    """The new version's name and the lineage written with it."""

    name: str
    lineage: dict[str, Any]


def build_lineage(
    config: ProjectConfig,
    prepared: Prepared,
    selected: Selected,
    champion: str | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Where the version came from: data, config, code, seeds, packages, trial, parent."""
    data, best, split = prepared.data, selected.best, config.data.split
    return {
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "data": {
            "source": data.source,
            "files": data.files,
            "digest": data.digest,
            "rows": prepared.rows.to_dict(),
        },
        "config_hash": config_hash(config),
        "config": config.model_dump(mode="json"),
        "code": code_version(),
        "seeds": {"split": split.seed, "search": config.training.search.seed, "trial": best.seed},
        "packages": package_versions(),
        "trial": {
            "index": best.index,
            "trial_id": best.trial_id,
            "model": best.model,
            "params": best.params,
            "validation_score": best.score,
            "steps": best.steps,
            "node_id": best.node_id,
            "workers": best.workers,
            "nodes": best.nodes,  # rank, node_id, address, fit rows, peak RSS of each worker
        },
        "parent": champion,
        "workers_per_trial": prepared.workers.to_dict(),
        "ray": _ray_nodes(selected),
        "refit": selected.refit,
        **(extra or {}),
    }


def _ray_nodes(selected: Selected) -> dict[str, Any]:
    """The nodes (ids and addresses) that ran the search's trials and their workers."""
    used = {
        node["node_id"]: node["address"]
        for trial in selected.search.trials
        for node in trial.nodes
        if node.get("node_id")
    }
    for trial in selected.search.trials:  # trials that failed before they reported
        if trial.node_id and trial.node_id not in used:
            used[trial.node_id] = None
    return {
        "nodes": sorted(used),
        "addresses": sorted({a for a in used.values() if a}),
        "workers_per_trial": selected.search.extra.get("workers", 1),
    }


def register_version(
    config: ProjectConfig,
    registry: Registry,
    prepared: Prepared,
    selected: Selected,
    evaluation: Evaluation,
    stages: StageLog,
    *,
    extra_lineage: dict[str, Any] | None = None,
    checks: ChecksReport | None = None,
) -> Registered:
    """Write the version's bundle, its dataset checks and model card to the registry
    (complete, or not at all)."""
    with stages.stage("register version") as note:
        champion = evaluation.champion
        lineage = build_lineage(config, prepared, selected, champion.version, extra_lineage)
        bundle = VersionBundle(
            model_kind=selected.best.model,
            model_file=selected.model_file,
            model=selected.model_bytes,
            features_json=prepared.pipeline.to_json(),
            schema=Schema.from_config(config).to_dict(),
            reference=prepared.reference,
            metrics={
                "metric": evaluation.metric,
                "holdout": evaluation.metrics,
                "validation_score": selected.best.score,
                "champion": {"version": champion.version, "holdout": champion.metrics},
            },
            gate=evaluation.gate.to_dict(),
            lineage=lineage,
            trials=[_trial_record(t) for t in selected.search.trials],
            checks=checks.to_dict() if checks is not None else None,
            parent_reference=_reference_of(registry, champion.version),
        )
        version = bundle.register(
            registry,
            metric=evaluation.metric,
            score=evaluation.metrics[evaluation.metric],
            gate_passed=evaluation.gate.passed,
            rows=prepared.rows.total,
        )
        note["detail"] = f"{config.name} {version} at {registry.location}"
    return Registered(version, lineage)


def _reference_of(registry: Registry, version: str | None) -> pd.DataFrame | None:
    """The parent's reference sample, for the card's plots (none when it cannot be read)."""
    if version is None:
        return None
    try:
        return BundleReader(registry, version).reference()
    except Exception:  # the card draws without it; the gate already judged the champion
        return None


def promote(registry: Registry, version: str, evaluation: Evaluation, stages: StageLog) -> None:
    """Move the champion alias to ``version`` after loading it through the verified path."""
    from raymlops.predictor import load_predictor

    with stages.stage("promote to champion") as note:
        # load once through the verified path: what is promoted is what serving will load
        load_predictor(registry, version)
        registry.promote(version, reason="; ".join(evaluation.gate.reasons))
        note["detail"] = f"champion: {version}"


def _trial_record(trial: Any) -> dict[str, Any]:
    # where a trial's model lay on one machine's disk is not part of the version
    return {k: v for k, v in trial.__dict__.items() if k != "model_path"}
