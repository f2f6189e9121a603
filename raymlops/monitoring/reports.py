"""Evidently adapter: the per-window report, its files on storage, and the Evidently workspace.

The verdicts the monitor acts on come from :mod:`raymlops.monitoring.drift` (fast, equal to
Evidently's). This module draws the report a person reads: Evidently 0.7's ``DataDriftPreset``
(plus classification or regression quality when the window carries labels and predictions)
with column types and roles from the schema, on a sample of a large window (``ReportInfo``
says so), saved as HTML and JSON under ``{storage}/reports/{name}/`` and, optionally, added to
an Evidently workspace so ``evidently ui --workspace DIR`` shows the history.

No ``ray`` import: the monitor calls this in its actor, tests call it directly.

Example:
    >>> snapshot, info = evidently_report(reference, window, schema, drift_share=0.5)  # doctest: +SKIP
    >>> paths = save_report(storage, "churn", 12, snapshot, drift)  # doctest: +SKIP
    >>> paths.html  # doctest: +SKIP
    '/srv/store/reports/churn/window-000012.html'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from raymlops.monitoring.drift import ColumnDrift, DriftResult, drift_columns

if TYPE_CHECKING:
    from evidently.core.report import Snapshot

    from raymlops.schema import Schema
    from raymlops.storage import Storage

__all__ = [
    "ReportInfo",
    "ReportPaths",
    "add_to_workspace",
    "workspace_path",
    "evidently_report",
    "evidently_verdicts",
    "report_name",
    "save_report",
]


@dataclass(frozen=True)
class ReportInfo:
    """What the report was drawn from: rows used, sampling, columns and those left out."""

    rows: int  # current rows in the report
    reference_rows: int
    sampled_from: int | None  # the window's rows when the report is drawn from a sample
    columns: tuple[str, ...]  # columns in the drift preset
    skipped: dict[str, str] = field(default_factory=dict)  # column -> why it is not in it
    quality: str | None = None  # "classification" | "regression" when labels were evaluated

    @property
    def sampled(self) -> bool:
        return self.sampled_from is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "reference_rows": self.reference_rows,
            "sampled_from": self.sampled_from,
            "columns": list(self.columns),
            "skipped": dict(self.skipped),
            "quality": self.quality,
        }


@dataclass(frozen=True)
class ReportPaths:
    """Where one window's files are, as absolute paths on the storage's filesystem."""

    html: str
    json: str
    drift: str | None  # drift.json of the fast verdicts, when given


def evidently_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    schema: Schema,
    *,
    drift_share: float,
    max_rows: int = 20_000,
    seed: int = 0,
    labels: bool = False,
    prediction: str = "prediction",
) -> tuple[Snapshot, ReportInfo]:
    """Run Evidently's ``DataDriftPreset`` (and a quality preset when ``labels``) on a window.

    Args:
        reference: the version's reference sample (``reference.parquet``).
        current: the window; above ``max_rows`` rows a seeded sample is drawn (an HTML report
            of a million rows is neither fast nor readable) and ``ReportInfo.sampled_from``
            records the full size. Verdicts on the full window come from ``compute_drift``.
        schema: types and roles of the columns (the one declaration of the data).
        drift_share: dataset drift when this share of columns drifts.
        labels: the window carries the target and the ``prediction`` column: add
            ``ClassificationPreset``/``RegressionPreset``. (The target's drift is in the drift
            preset whenever the window has the target column, as in ``compute_drift``.)
        prediction: the prediction column of the window (the prediction log's name).

    Columns with no value on either side are left out of the drift preset (Evidently raises on
    them) and named in ``ReportInfo.skipped``.

    Example:
        >>> snapshot, info = evidently_report(ref, window, schema, drift_share=0.5)  # doctest: +SKIP
        >>> info.sampled_from  # doctest: +SKIP
        1000000
    """
    from evidently import Dataset, Report
    from evidently.presets import ClassificationPreset, DataDriftPreset, RegressionPreset

    window_rows = len(current)
    sampled_from = None
    if window_rows > max_rows:
        current = current.sample(n=max_rows, random_state=seed)
        sampled_from = window_rows
    if len(reference) > max_rows:
        reference = reference.sample(n=max_rows, random_state=seed)

    with_labels = labels and schema.target in current.columns and prediction in current.columns
    # As compute_drift: the target's drift is checked whenever the window carries it.
    candidates = drift_columns(schema, reference.columns if schema.target in current else ())
    columns, skipped = [], {}
    for name in candidates:
        if name not in current.columns or name not in reference.columns:
            skipped[name] = "not in both the reference and the window"
        elif _empty(reference[name]) or _empty(current[name]):
            skipped[name] = "no non-null values on one side"
        else:
            columns.append(name)
    classes: list[Any] = []
    if with_labels and schema.task == "classification":
        seen = pd.concat([reference[schema.target], current[schema.target]]).dropna()
        classes = sorted(set(seen.tolist()))
    definition = schema.evidently_definition(
        columns=columns, prediction=prediction if with_labels else None, labels=classes
    )
    metrics: list[Any] = [DataDriftPreset(columns=columns, drift_share=drift_share)]
    quality = None
    if with_labels:
        quality = schema.task
        metrics.append(ClassificationPreset() if schema.task == "classification" else RegressionPreset())
    used = [c for c in current.columns if c in set(columns) | _role_columns(schema, prediction)]
    snapshot = Report(metrics, include_tests=True).run(
        current_data=Dataset.from_pandas(current[used], data_definition=definition),
        reference_data=Dataset.from_pandas(
            reference[[c for c in used if c in reference.columns]], data_definition=definition
        ),
    )
    info = ReportInfo(
        rows=len(current),
        reference_rows=len(reference),
        sampled_from=sampled_from,
        columns=tuple(columns),
        skipped=skipped,
        quality=quality,
    )
    return snapshot, info


def _empty(series: pd.Series) -> bool:
    """No value Evidently would test (it drops nulls and infinities)."""
    if series.dtype.kind == "f":
        return not bool(np.isfinite(series.to_numpy()).any())
    return not bool(series.notna().any())


def _role_columns(schema: Schema, prediction: str) -> set[str]:
    return {schema.target, prediction}


def evidently_verdicts(snapshot: Snapshot) -> dict[str, ColumnDrift]:
    """Evidently's own per-column verdicts from a report run with tests (as ours are made).

    Example:
        >>> evidently_verdicts(snapshot)["plan"].drifted  # doctest: +SKIP
        False
    """
    payload = snapshot.dict()
    scores: dict[str, tuple[str, float, float]] = {}
    for metric in payload["metrics"]:
        config = metric["config"]
        if config["type"].endswith("ValueDrift"):
            scores[config["column"]] = (config["method"], metric["value"], config["threshold"])
    verdicts = {}
    for test in payload["tests"]:
        params = test["metric_config"]["params"]
        if params.get("type", "").endswith("ValueDrift") and params["column"] in scores:
            column = params["column"]
            method, score, threshold = scores[column]
            verdicts[column] = ColumnDrift(
                column=column,
                kind="",
                method=method,
                score=float(score),
                threshold=float(threshold),
                drifted=test["status"] == "FAIL",
            )
    return verdicts


def workspace_path(name: str) -> str:
    """The Evidently workspace of a model's reports (relative to the storage root)."""
    return f"reports/{name}/workspace"


def report_name(name: str, window: int) -> str:
    """The storage path of a window's report, without extension."""
    return f"reports/{name}/window-{window:06d}"


def save_report(
    storage: Storage, name: str, window: int, snapshot: Snapshot, drift: DriftResult | None
) -> ReportPaths:
    """Write ``window-000012.html`` and ``.json`` (and ``.drift.json``) under ``reports/{name}/``.

    Example:
        >>> save_report(storage, "churn", 12, snapshot, drift).json  # doctest: +SKIP
        '/srv/store/reports/churn/window-000012.json'
    """
    base = report_name(name, window)
    storage.write_bytes(f"{base}.html", snapshot.get_html_str(as_iframe=False).encode())
    storage.write_bytes(f"{base}.json", snapshot.json().encode())
    drift_path = None
    if drift is not None:
        storage.write_json(f"{base}.drift.json", drift.to_dict())
        drift_path = storage.path(f"{base}.drift.json")
    return ReportPaths(
        html=storage.path(f"{base}.html"), json=storage.path(f"{base}.json"), drift=drift_path
    )


def add_to_workspace(workspace_dir: str, project: str, snapshot: Snapshot) -> None:
    """Add the report to a local Evidently workspace (project created on first use).

    ``evidently ui --workspace DIR`` then shows every window of the model as a history.

    Example:
        >>> add_to_workspace("./.raymlops/evidently", "churn", snapshot)  # doctest: +SKIP
    """
    from evidently.ui.workspace import Workspace

    workspace = Workspace.create(workspace_dir)
    found = workspace.search_project(project)
    target = found[0] if found else workspace.create_project(project, description="raymlops drift")
    workspace.add_run(target.id, snapshot, include_data=False)
