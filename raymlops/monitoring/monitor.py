"""The DriftMonitor: a detached, named Ray actor per model that watches served traffic.

::

    Serve replicas ─(prediction log, MonitorSink)─► DriftMonitor "monitor:{name}" (namespace raymlops)
        windows of monitoring.window_rows ─► drift per column (parallel, Evidently's tests)
        ─► Evidently report (HTML + JSON + workspace) ─► policy.decide ─► retrain Ray job
        ─► follows the job: SUCCEEDED / FAILED (alert) ─► state persisted after each step

Memory stays bounded: rows wait in one window buffer, and at most ``_MAX_PENDING`` cut windows
wait for the worker thread; beyond that a window is dropped and counted (``dropped_rows``),
never silently. Each window is compared with the reference sample of the version that answered
most of its rows, profiled once per version.

The state (:class:`raymlops.monitoring.policy.MonitorState`) is written to
``{storage}/monitoring/{name}/state.json`` after every decision and job update, and read back
when the actor (re)starts (``max_restarts=-1``), so a restart resumes where it was; a retrain
that was decided but perhaps not submitted is submitted again under the same id, which Ray
refuses if it already exists.

Example:
    >>> monitor = start_monitor("raymlops.yaml")  # doctest: +SKIP
    >>> ray.get(monitor.status.remote())["windows_seen"]  # doctest: +SKIP
    0
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import pyarrow as pa
import ray

from raymlops.config import load_config
from raymlops.monitoring.policy import (
    TERMINAL,
    Decision,
    MonitorState,
    decide,
    decision_path,
    state_path,
)
from raymlops.registry import Registry
from raymlops.registry.bundle import VersionBundle
from raymlops.schema import Schema
from raymlops.serving.monitor_sink import NAMESPACE, find_monitor, monitor_name
from raymlops.storage import Storage

__all__ = ["GaugeKeeper", "get_monitor", "monitor_name", "start_monitor", "stop_monitor"]

_log = logging.getLogger("raymlops.monitoring")
#: cut windows that may wait for the worker; more are dropped and counted
_MAX_PENDING = 4
#: a job submission refused by a busy or starting head is tried again, this often and apart
_SUBMIT_TRIES, _SUBMIT_RETRY_S = 6, 5.0


#: Ray's metrics agent drops a gauge series that is not set again for about 20 s, so a 30-60 s
#: scrape between windows missed raymlops_drift_share/score; the monitor sets them again this often
GAUGE_REFRESH_S = 5.0


class GaugeKeeper:
    """Sets gauges and keeps their last values, to set them again every ``every_s`` seconds."""

    def __init__(self, every_s: float = GAUGE_REFRESH_S, clock: Any = time.monotonic) -> None:
        self.every_s = every_s
        self._clock = clock
        self._last: dict[tuple[int, tuple[tuple[str, str], ...]], tuple[Any, float, dict]] = {}
        self._set_at = clock()

    def set(self, gauge: Any, value: float, tags: dict[str, str]) -> None:
        gauge.set(value, tags=tags)
        self._last[(id(gauge), tuple(sorted(tags.items())))] = (gauge, value, tags)

    def refresh(self) -> int:
        """Set every kept value again when ``every_s`` has passed; returns how many were set."""
        now = self._clock()
        if now - self._set_at < self.every_s:
            return 0
        self._set_at = now
        for gauge, value, tags in self._last.values():
            gauge.set(value, tags=tags)
        return len(self._last)


class _Reference(NamedTuple):
    profile: Any  # raymlops.monitoring.drift.ReferenceProfile
    frame: pd.DataFrame
    schema: Schema


class DriftMonitor:
    """The actor's body (see the module docstring); created by :func:`start_monitor`."""

    def __init__(self, config_path: str, jobs_address: str, follow_s: float = 2.0) -> None:
        self.config_path = config_path
        self.config = load_config(config_path)
        self.rule = self.config.monitoring
        self.registry = Registry(Storage.from_uri(self.config.storage), self.config.name)
        self.storage = self.registry.storage
        self.jobs_address = jobs_address
        self._lock = threading.Lock()
        self._buffer: list[pd.DataFrame] = []
        self._buffered = 0
        self._pending: queue.Queue[pd.DataFrame] = queue.Queue(maxsize=_MAX_PENDING)
        self._busy = False
        self.received_rows = self.dropped_rows = 0
        self._references: dict[str, _Reference] = {}
        self._decisions: list[dict[str, Any]] = []
        self._metrics: dict[str, Any] | None = None
        self._gauges = GaugeKeeper()
        self._follow_s = follow_s
        self._stop = threading.Event()
        self.state = self._load_state()
        if self.state.job_in_flight is not None:
            self._submit(self.state.job_in_flight)  # perhaps never sent before a crash
        self._worker = threading.Thread(target=self._work, name="raymlops-monitor", daemon=True)
        self._worker.start()
        self._save_state()  # `monitor status` sees a running monitor before its first window

    # -- the actor's methods ------------------------------------------------------------------

    def ingest(self, rows: pd.DataFrame | pa.Table, wait: bool = False) -> int:
        """Take logged rows (the prediction log sends Arrow tables); returns how many rows this
        call made the monitor drop (mostly 0).

        When windows are cut faster than they are checked, a full queue drops the new window
        (counted in ``dropped_rows``), or with ``wait`` makes the caller wait for room (a batch
        feed that must not lose rows; the prediction log never waits).
        """
        if isinstance(rows, pa.Table):
            rows = rows.to_pandas()
        size = self.rule.window_rows
        if wait:
            while self._pending.full() and not self._stop.is_set():
                time.sleep(0.05)
        dropped = 0
        with self._lock:
            self.received_rows += len(rows)
            self._buffer.append(rows)
            self._buffered += len(rows)
            while self._buffered >= size:
                frame = pd.concat(self._buffer, ignore_index=True)
                window, rest = frame.iloc[:size], frame.iloc[size:]
                self._buffer, self._buffered = ([rest] if len(rest) else []), len(rest)
                try:
                    self._pending.put_nowait(window.reset_index(drop=True))
                except queue.Full:
                    dropped += size
            self.dropped_rows += dropped
        if dropped:
            _log.warning(
                "monitor %s: %d rows dropped: windows arrive faster than they are checked",
                self.config.name,
                dropped,
            )
        return dropped

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "model": self.config.name,
                "pid": os.getpid(),
                **self.state.to_dict(),
                "buffered_rows": self._buffered,
                "pending_windows": self._pending.qsize(),
                "received_rows": self.received_rows,
                "dropped_rows": self.dropped_rows,
                "window_rows": self.rule.window_rows,
                "recent_decisions": self._decisions[-10:],
            }

    def wait_idle(self, timeout_s: float = 60.0) -> bool:
        """True once every cut window is decided and no job is in flight (tests, the demo)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                idle = self._pending.empty() and not self._busy
                idle = idle and self.state.job_in_flight is None
            if idle:
                return True
            time.sleep(0.2)
        return False

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._save_state()
        return self.status()

    # -- the worker thread --------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            self._gauges.refresh()
            try:
                window = self._pending.get(timeout=min(self._follow_s, GAUGE_REFRESH_S))
            except queue.Empty:
                self._follow_job()
                continue
            with self._lock:
                self._busy = True
            try:
                self._decide(window)
            except Exception:
                _log.exception("monitor %s: a window could not be checked", self.config.name)
            finally:
                with self._lock:
                    self._busy = False
            self._follow_job()

    def _reference(self, version: str) -> _Reference:
        """A version's reference sample, its drift profile and its schema, read once."""
        from raymlops.monitoring.drift import ReferenceProfile
        from raymlops.predictor import read_reference

        if version not in self._references:
            frame = read_reference(self.registry, version)
            schema = Schema.from_dict(json.loads(self.registry.read_verified(version, VersionBundle.SCHEMA)))
            self._references[version] = _Reference(
                ReferenceProfile.build(frame, schema), frame, schema
            )
        return self._references[version]

    def _decide(self, window: pd.DataFrame) -> Decision:
        from raymlops.monitoring.parallel import parallel_drift

        versions = window["model_version"] if "model_version" in window else pd.Series()
        version = (
            Counter(versions).most_common(1)[0][0]
            if len(versions)
            else self.registry.resolve("champion")
        )
        reference = self._reference(version)
        drift = parallel_drift(reference.profile, window, drift_share=self.rule.drift_share)
        # only this thread changes the state: decide on a copy, commit it with its entry at once
        state, decision = decide(
            self.state,
            self.rule,
            share=drift.share,
            now=time.time(),
            model=self.config.name,
            drifted_columns=tuple(drift.drifted_columns),
        )
        number = decision.window
        report = None
        if decision.retrain or number % self.rule.report_every == 0:
            report = self._report(number, reference, window, drift)
            state = _with_report(state, report)
        entry = {
            **decision.to_dict(),
            "version": version,
            "rows": len(window),
            "columns": {c.column: round(c.score, 6) for c in drift.columns},
            "drifted_columns": drift.drifted_columns,
            "report": report,
        }
        with self._lock:
            self.state = state
            self._decisions.append(entry)
            del self._decisions[:-100]
        self.storage.write_json(decision_path(self.config.name, number), entry)
        self._save_state()
        self._observe(drift, decision)
        _log.warning(
            "monitor %s window %d (%s): %s", self.config.name, number, version, "; ".join(decision.reasons)
        )
        if decision.retrain and decision.submission_id:
            self._submit(decision.submission_id, parent=version, report=report)
        return decision

    def _report(self, number: int, reference: _Reference, window: pd.DataFrame, drift: Any) -> str:
        """The Evidently report of a window (HTML + JSON, and a workspace snapshot)."""
        from raymlops.monitoring.reports import (
            add_to_workspace,
            evidently_report,
            save_report,
            workspace_path,
        )

        schema = reference.schema
        snapshot, _ = evidently_report(
            reference.frame,
            window,
            schema,
            drift_share=self.rule.drift_share,
            labels=schema.target in window.columns,
        )
        paths = save_report(self.storage, self.config.name, number, snapshot, drift)
        if self.storage.is_local:
            try:
                add_to_workspace(
                    self.storage.path(workspace_path(self.config.name)), self.config.name, snapshot
                )
            except Exception as exc:  # the report files are written; the UI copy is a bonus
                _log.warning("monitor %s: workspace not updated: %s", self.config.name, exc)
        return str(paths.html)

    # -- jobs -----------------------------------------------------------------------------------

    def _submit(self, submission_id: str, parent: str | None = None, report: str | None = None) -> None:
        from raymlops.monitoring.retrain import submit_retrain

        job = next(j for j in self.state.jobs if j.submission_id == submission_id)
        for attempt in range(_SUBMIT_TRIES):
            try:
                _, new = submit_retrain(
                    self.jobs_address,
                    self.config_path,
                    submission_id=submission_id,
                    window=job.window,
                    parent=parent,
                    report=report,
                )
                break
            except Exception as exc:  # e.g. "No available agent to submit job": a busy head
                if attempt + 1 == _SUBMIT_TRIES:
                    self._finish(submission_id, "FAILED", f"could not be submitted: {exc}")
                    return
                _log.info("monitor %s: submitting %s again: %s", self.config.name, submission_id, exc)
                time.sleep(_SUBMIT_RETRY_S)
        _log.warning(
            "monitor %s: retrain job %s %s",
            self.config.name,
            submission_id,
            "submitted" if new else "already exists (not submitted again)",
        )
        if new:
            self._count("raymlops_retrains_started")

    def _follow_job(self) -> None:
        submission_id = self.state.job_in_flight
        if submission_id is None:
            return
        from raymlops.monitoring.retrain import job_state

        try:
            status, message = job_state(self.jobs_address, submission_id)
        except Exception as exc:  # the jobs API is briefly unreachable: ask again next time
            _log.info("monitor %s: job %s unknown for now: %s", self.config.name, submission_id, exc)
            return
        if status in TERMINAL:
            self._finish(submission_id, status, message)

    def _finish(self, submission_id: str, status: str, message: str) -> None:
        with self._lock:
            self.state = self.state.job_finished(submission_id, status, now=time.time(), message=message)
        self._save_state()
        if status != "SUCCEEDED":
            self._count("raymlops_retrains_failed")
            _log.error(
                "ALERT monitor %s: retrain job %s %s: %s; the champion keeps serving",
                self.config.name,
                submission_id,
                status,
                message,
            )

    # -- state and metrics ----------------------------------------------------------------------

    def _load_state(self) -> MonitorState:
        path = state_path(self.config.name)
        if self.storage.exists(path):
            return MonitorState.from_dict(self.storage.read_json(path))  # type: ignore[arg-type]
        return MonitorState(run=uuid.uuid4().hex[:8])

    def _save_state(self) -> None:
        with self._lock:
            payload = {
                **self.state.to_dict(),
                "saved_at": dt.datetime.now(dt.timezone.utc).isoformat(),
                # whether it runs, and where: `monitor status` without a cluster address reads this
                "running": not self._stop.is_set(),
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "window_rows": self.rule.window_rows,
            }
        self.storage.write_json(state_path(self.config.name), payload)

    def _instruments(self) -> dict[str, Any]:
        if self._metrics is None:
            from ray.util import metrics

            model = ("model",)
            self._metrics = {
                "share": metrics.Gauge("raymlops_drift_share", "drifted column share", model),
                "score": metrics.Gauge(
                    "raymlops_drift_score", "per-column drift score", ("model", "column")
                ),
                "windows": metrics.Counter(
                    "raymlops_windows", "windows checked", ("model", "drifted")
                ),
                "raymlops_retrains_started": metrics.Counter(
                    "raymlops_retrains_started", "retrain jobs submitted", model
                ),
                "raymlops_retrains_failed": metrics.Counter(
                    "raymlops_retrains_failed", "retrain jobs that failed", model
                ),
            }
        return self._metrics

    def _observe(self, drift: Any, decision: Decision) -> None:
        instruments, model = self._instruments(), self.config.name
        self._gauges.set(instruments["share"], drift.share, {"model": model})
        for column in drift.columns:
            tags = {"model": model, "column": column.column}
            self._gauges.set(instruments["score"], column.score, tags)
        instruments["windows"].inc(tags={"model": model, "drifted": str(decision.drifted).lower()})

    def _count(self, name: str) -> None:
        self._instruments()[name].inc(tags={"model": self.config.name})


def _with_report(state: MonitorState, report: str) -> MonitorState:
    from dataclasses import replace

    return replace(state, reports=(*state.reports, report)[-50:])


def start_monitor(config_path: str | Path, *, follow_s: float = 2.0) -> Any:
    """Start (or find) the detached DriftMonitor of the config's model on the connected Ray."""
    from raymlops.runtime import connected_jobs_address

    config = load_config(config_path)
    actor = ray.remote(DriftMonitor).options(  # type: ignore[attr-defined]
        name=monitor_name(config.name),
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        max_concurrency=8,
        num_cpus=0,
    )
    return actor.remote(str(Path(config_path).resolve()), connected_jobs_address(), follow_s)


def get_monitor(model: str) -> Any | None:
    """The running monitor of ``model`` on the connected Ray, or None."""
    return find_monitor(model)


def stop_monitor(model: str) -> dict[str, Any] | None:
    """Save the monitor's state and end it; returns its last status (None if none ran)."""
    monitor = get_monitor(model)
    if monitor is None:
        return None
    status = ray.get(monitor.stop.remote(), timeout=60)
    ray.kill(monitor, no_restart=True)
    return status
