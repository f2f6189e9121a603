"""Stage 1b, check: the dataset checks of :mod:`raymlops.data.checks` on the prepared data.

Duplicates and leakage across the split come from the row digests that the validation pass
left in the object store (grouped by hash with Ray Data); the column profile from the fitted
feature statistics (and the champion's, for the shift); target leakage and labels from the
reference sample and the class counts. A blocked run saves its report under
``{storage}/runs/`` (so the failure can be read later), registers nothing and exits 3.

Example:
    >>> report = check_dataset(config, schema, registry, prepared, StageLog())  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import json

from raymlops.config import ProjectConfig
from raymlops.data.checks import CheckInputs, ChecksReport, run_checks
from raymlops.errors import DataValidationError
from raymlops.features.pipeline import ColumnStats, FeaturePipeline
from raymlops.registry import Registry
from raymlops.registry.bundle import BundleReader
from raymlops.schema import Schema
from raymlops.training.prepare import Prepared
from raymlops.training.stages import StageLog

__all__ = ["check_dataset", "runs_path"]


def runs_path(name: str, stamp: str) -> str:
    """Where a blocked run keeps its checks (relative to the storage root)."""
    return f"runs/{name}/{stamp}/checks.json"


def _champion_stats(registry: Registry) -> dict[str, ColumnStats] | None:
    champion = registry.champion()
    if champion is None:
        return None
    try:
        return FeaturePipeline.from_json(BundleReader(registry, champion).features_json()).stats
    except Exception:  # a champion that cannot be read is the gate's business, not the checks'
        return None


def check_dataset(
    config: ProjectConfig,
    schema: Schema,
    registry: Registry,
    prepared: Prepared,
    stages: StageLog,
) -> ChecksReport:
    """Run the dataset checks; raise DataValidationError (exit 3) when one blocks.

    Raises:
        DataValidationError: a check with severity ``block`` failed; the report is saved under
            ``{storage}/runs/{name}/{time}/checks.json`` and nothing is registered.
    """
    from raymlops.data.dataset import overlap_from_digests

    with stages.stage("dataset checks") as note:
        id_columns = [c for c in schema.input_columns if schema.columns[c].effective_role == "id"]
        overlap = overlap_from_digests(prepared.data.digests, id_columns)
        target = prepared.reference.get(schema.target)
        target_stats = None
        if schema.task == "regression" and target is not None:
            values = target.astype(float)
            target_stats = ColumnStats(
                count=int(values.notna().sum()),
                missing=int(values.isna().sum()),
                mean=float(values.mean()),
                min=float(values.min()),
                max=float(values.max()),
            )
        report = run_checks(
            CheckInputs(
                overlap=overlap,
                stats=prepared.pipeline.stats,
                sample=prepared.reference,
                class_counts=prepared.class_counts or None,
                target_stats=target_stats,
                previous_stats=_champion_stats(registry),
                time_ranges=prepared.data.time_ranges if prepared.data.time_cut is not None else None,
            ),
            schema,
            config.data.checks,
        )
        problems = report.problems
        note["detail"] = (
            f"{len(report.findings) - len(problems)} passed, "
            f"{sum(f.severity == 'warn' for f in problems)} warning(s)"
            + (", blocked" if report.blocked else "")
        )
    if report.blocked:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        path = runs_path(config.name, stamp)
        registry.storage.write_bytes(path, json.dumps(report.to_dict(), indent=2).encode())
        raise DataValidationError(
            f"{report.render()}\nnothing was registered; the report is saved at "
            f"{registry.storage.path(path)}. Fix the data, or change the check's severity "
            "under data.checks in the config"
        )
    return report
