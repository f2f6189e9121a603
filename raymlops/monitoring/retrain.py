"""The retrain job, and how the monitor starts and follows it through the Ray Jobs API.

The job (``python -m raymlops retrain --config C --trigger-window N --parent V --report R``,
the same as ``jobs/retrain.py``) is the training pipeline on ``monitoring.retrain_source``:
a new version whose lineage names its parent and the report that triggered it, the gate
against the champion, and the promotion if the gate passes (then serving is pushed, see
:mod:`raymlops.serving.push`). A rejection is recorded with the gate's reasons, in the
version and in ``{storage}/monitoring/{name}/retrains/``.

The monitor submits it with a deterministic ``submission_id`` (model + trigger window): Ray
refuses a second job with the same id, so a retried or repeated submission makes no new job.
It ships no ``working_dir``: the monitor actor itself runs raymlops on the cluster, so the
cluster's Python has it installed, and a job that uploads the checkout would run code other
than the monitor's (and its Ray tasks failed here to fetch the uploaded package from the GCS).
The config path is absolute, as seen from the monitor: on a multi-node cluster, keep the
project on storage every node sees.

Example:
    >>> submit_retrain(connected_jobs_address(), "/abs/raymlops.yaml", window=12,
    ...                submission_id=retrain_submission_id("churn", 12, "3f2a9c1e"),
    ...                parent="v1", report="reports/churn/window-000012.html")  # doctest: +SKIP
    ('raymlops-retrain-churn-3f2a9c1e-w000012', True)
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from raymlops.config import CHALLENGER, ProjectConfig
from raymlops.monitoring.policy import retrain_outcome_path

__all__ = ["job_state", "run_retrain", "submit_retrain"]

#: the job's own id, for its lineage (Ray does not hand the driver its submission id)
SUBMISSION_ID_ENV = "RAYMLOPS_SUBMISSION_ID"

def run_retrain(
    config: ProjectConfig,
    *,
    trigger_window: int | None = None,
    parent: str | None = None,
    report: str | None = None,
    address: str | None = None,
    stages: Any = None,
    verbose: int = 0,
) -> Any:
    """Train on ``monitoring.retrain_source``, gate against the champion, promote if it passes
    (with ``monitoring.promote: canary``, move the ``challenger`` alias instead: the canary).

    Returns the :class:`raymlops.training.run.TrainResult`; the outcome is also written to
    ``{storage}/monitoring/{name}/retrains/`` for ``raymlops monitor status``.
    """
    from raymlops.serving.push import push_alias_moved
    from raymlops.training.run import open_registry, train

    source = config.monitoring.retrain_source or config.data.source
    registry = open_registry(config)
    parent = parent or registry.aliases().get("champion")
    lineage = {
        "retrain": {
            "parent_version": parent,
            "trigger_window": trigger_window,
            "trigger_report": report,
            "source": source,
            "submission_id": os.environ.get(SUBMISSION_ID_ENV),
        }
    }
    canary_first = config.monitoring.promote == "canary"
    result = train(
        config,
        promote=not canary_first,
        address=address,
        source=source,
        extra_lineage=lineage,
        stages=stages,
        verbose=verbose,
    )
    alias = None
    if result.promoted:
        alias = "champion"
    elif canary_first and result.gate.passed:
        alias = CHALLENGER  # serving.canary follows it; `registry promote --canary` finishes
        registry.promote(result.version, alias=alias, reason=f"retrain canary (parent {parent})")
    pushed = push_alias_moved(config.name) if alias else False
    outcome = {
        "version": result.version,
        "parent_version": parent,
        "promoted": result.promoted,
        "alias": alias,
        "pushed_to_serving": pushed,
        "gate": result.gate.to_dict(),  # both models' metrics on the new holdout, and why
        "metrics": result.metrics,
        "trigger_window": trigger_window,
        "trigger_report": report,
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
    }
    registry.storage.write_json(retrain_outcome_path(config.name, result.version), outcome)
    return result


def _entrypoint(config_path: str, window: int, parent: str | None, report: str | None) -> str:
    args = ["--config", config_path, "--trigger-window", str(window)]
    if parent:
        args += ["--parent", parent]
    if report:
        args += ["--report", report]
    return "python -m raymlops retrain " + shlex.join(args)


def _runtime_env(submission_id: str) -> dict[str, Any]:
    # `python` must be the interpreter the cluster runs raymlops with: on a laptop that is a
    # virtualenv the raylet's PATH may not name
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {"env_vars": {"PATH": path, SUBMISSION_ID_ENV: submission_id}}


def submit_retrain(
    address: str,
    config_path: str,
    *,
    submission_id: str,
    window: int,
    parent: str | None = None,
    report: str | None = None,
) -> tuple[str, bool]:
    """Submit the retrain job for the trigger at ``window``; returns (submission_id, new).

    ``new`` is False when Ray already has a job with that id: the trigger was submitted before
    (by this monitor before a restart, or by a retry), and no second job is made.
    """
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    try:
        client.submit_job(
            entrypoint=_entrypoint(str(Path(config_path).resolve()), window, parent, report),
            submission_id=submission_id,
            runtime_env=_runtime_env(submission_id),
            metadata={"raymlops": "retrain", "trigger_window": str(window)},
        )
    except RuntimeError as exc:
        if "already exists" in str(exc):
            return submission_id, False
        raise
    return submission_id, True


def job_state(address: str, submission_id: str) -> tuple[str, str]:
    """(status, message) of a job, e.g. ("FAILED", "... exit code 1 ...")."""
    from ray.job_submission import JobSubmissionClient

    info = JobSubmissionClient(address).get_job_info(submission_id)
    return str(info.status.value if hasattr(info.status, "value") else info.status), info.message or ""
