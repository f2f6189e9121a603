"""When drift starts a retrain: the monitor's rule, as pure code.

A window is *drifted* when the share of drifted columns reaches ``monitoring.drift_share``
(Evidently's dataset-drift rule). A retrain starts when

* drift has held for ``monitoring.consecutive_windows`` windows in a row (debounce: one odd
  window does not retrain),
* ``monitoring.cooldown_s`` has passed since the last retrain started, and
* no retrain is in flight.

Starting one resets the run of drifted windows, so another needs as many new drifted windows.
Every decision carries its reasons, so the log says why something happened, or did not.

The state (:class:`MonitorState`) is small and JSON-serialisable: the monitor persists it after
every decision and resumes from it after a restart.

Example:
    >>> from raymlops.config import MonitoringConfig
    >>> state, rule = MonitorState(), MonitoringConfig(consecutive_windows=2, cooldown_s=60)
    >>> state, first = decide(state, rule, share=0.8, now=0.0)
    >>> first.retrain, first.reasons[-1]
    (False, 'drift in 1 of 2 consecutive windows needed')
    >>> state, second = decide(state, rule, share=0.7, now=10.0)
    >>> second.retrain, second.window
    (True, 2)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from raymlops.config import MonitoringConfig

__all__ = [
    "Decision",
    "JobRecord",
    "MonitorState",
    "decide",
    "decision_path",
    "decisions_folder",
    "retrain_outcome_path",
    "retrain_submission_id",
    "state_path",
]

#: job states after which a job is no longer in flight (Ray's JobStatus values)
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})


def state_path(model: str) -> str:
    """Where the monitor keeps its :class:`MonitorState` (relative to the storage root)."""
    return f"monitoring/{model}/state.json"


def decisions_folder(model: str) -> str:
    """Where the monitor keeps its per-window decisions (relative to the storage root)."""
    return f"monitoring/{model}/decisions"


def decision_path(model: str, window: int) -> str:
    """Where the monitor keeps one window's decision, with its reasons and column scores."""
    return f"{decisions_folder(model)}/window-{window:06d}.json"


def retrain_outcome_path(model: str, version: str) -> str:
    """Where a retrain job keeps its outcome: the version, the gate, promoted or not."""
    return f"monitoring/{model}/retrains/{version}.json"


def retrain_submission_id(model: str, window: int, run: str = "") -> str:
    """The retrain job's id for a trigger: the same trigger always names the same job, so a
    repeated submission (a retry, a restarted monitor) is refused by Ray instead of doubled.

    ``run`` is the monitor state's id (:attr:`MonitorState.run`): a monitor started on fresh
    state counts windows from 1 again, and must not collide with the jobs of an earlier one.
    """
    return f"raymlops-retrain-{model}-{run + '-' if run else ''}w{window:06d}"


@dataclass(frozen=True)
class Decision:
    """What the monitor decided after one window, and why."""

    window: int
    share: float
    drifted: bool
    retrain: bool
    reasons: tuple[str, ...]
    at: float
    submission_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reasons": list(self.reasons)}


@dataclass(frozen=True)
class JobRecord:
    """A retrain job the monitor started, and the last state it saw."""

    submission_id: str
    window: int
    status: str
    submitted_at: float
    finished_at: float | None = None
    message: str = ""


@dataclass(frozen=True)
class MonitorState:
    """Everything the monitor must remember across a restart."""

    run: str = ""
    windows_seen: int = 0
    consecutive_drift: int = 0
    last_retrain_at: float | None = None
    job_in_flight: str | None = None
    last_share: float | None = None
    last_drifted_columns: tuple[str, ...] = ()
    jobs: tuple[JobRecord, ...] = ()
    alerts: tuple[str, ...] = ()
    reports: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        for key in ("last_drifted_columns", "alerts", "reports"):
            payload[key] = list(payload[key])
        payload["jobs"] = [asdict(job) for job in self.jobs]
        return payload

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> MonitorState:
        return cls(
            run=str(payload.get("run", "")),
            windows_seen=int(payload["windows_seen"]),
            consecutive_drift=int(payload["consecutive_drift"]),
            last_retrain_at=payload.get("last_retrain_at"),
            job_in_flight=payload.get("job_in_flight"),
            last_share=payload.get("last_share"),
            last_drifted_columns=tuple(payload.get("last_drifted_columns", ())),
            jobs=tuple(JobRecord(**job) for job in payload.get("jobs", ())),
            alerts=tuple(payload.get("alerts", ())),
            reports=tuple(payload.get("reports", ())),
        )

    def job_finished(
        self, submission_id: str, status: str, *, now: float, message: str = ""
    ) -> MonitorState:
        """Record a job's final status; a failed job adds an alert and frees the slot."""
        jobs = tuple(
            replace(job, status=status, finished_at=now, message=message)
            if job.submission_id == submission_id
            else job
            for job in self.jobs
        )
        alerts = self.alerts
        if status != "SUCCEEDED":
            alerts = (*alerts, f"retrain job {submission_id} {status}: {message}".strip())
        in_flight = None if self.job_in_flight == submission_id else self.job_in_flight
        return replace(self, jobs=jobs, alerts=alerts, job_in_flight=in_flight)


def decide(
    state: MonitorState,
    rule: MonitoringConfig,
    *,
    share: float,
    now: float,
    model: str = "model",
    drifted_columns: tuple[str, ...] = (),
) -> tuple[MonitorState, Decision]:
    """Apply the rule to one more window whose drifted-column share is ``share``.

    Returns the new state and the decision. ``now`` is a wall-clock time in seconds (the
    cooldown must hold across restarts, so not a monotonic clock).
    """
    window = state.windows_seen + 1
    drifted = share >= rule.drift_share
    run = state.consecutive_drift + 1 if drifted else 0
    named = ", ".join(drifted_columns[:5]) + (" ..." if len(drifted_columns) > 5 else "")
    reasons = [
        f"drift share {share:.2f} {'>=' if drifted else '<'} {rule.drift_share:.2f}"
        + (f" ({named})" if named else "")
    ]
    retrain = False
    if not drifted:
        reasons.append("no drift: the run of drifted windows is reset")
    elif run < rule.consecutive_windows:
        reasons.append(f"drift in {run} of {rule.consecutive_windows} consecutive windows needed")
    elif state.job_in_flight is not None:
        reasons.append(f"retrain {state.job_in_flight} is still in flight")
    elif state.last_retrain_at is not None and now - state.last_retrain_at < rule.cooldown_s:
        left = rule.cooldown_s - (now - state.last_retrain_at)
        reasons.append(f"cooling down: {left:.0f}s of {rule.cooldown_s:.0f}s left")
    else:
        retrain = True
        reasons.append(f"drift held for {run} windows: retrain")
    submission_id = retrain_submission_id(model, window, state.run) if retrain else None
    new_state = replace(
        state,
        windows_seen=window,
        consecutive_drift=0 if retrain else run,
        last_share=share,
        last_drifted_columns=tuple(drifted_columns),
        last_retrain_at=now if retrain else state.last_retrain_at,
        job_in_flight=submission_id or state.job_in_flight,
        jobs=(*state.jobs, JobRecord(submission_id, window, "PENDING", now))
        if submission_id
        else state.jobs,
    )
    decision = Decision(window, share, drifted, retrain, tuple(reasons), now, submission_id)
    return new_state, decision
