"""The DriftMonitor on a real Ray: windows, decisions, retrain jobs through the Jobs API,
restarts, failed jobs, and a retrained model that the gate turns down."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raymlops.config import load_config
from raymlops.data.split import holdout_mask
from raymlops.examples import make_churn
from raymlops.pipeline import open_registry
from raymlops.registry.bundle import BundleReader
from raymlops.schema import Schema
from tests.conftest import write_project
from tests.helpers import register_model, wait_for_condition

WINDOW = 1000  # Evidently's tests on fewer rows see drift in noise


def _project(
    root: Path,
    *,
    retrain_source: str,
    gate: str = "",
    promote: str = "champion",
    consecutive_windows: int = 2,
    cooldown_s: float = 3600,
) -> Path:
    (root / "data").mkdir(parents=True)
    make_churn(3000, seed=3).to_csv(root / "data" / "train.csv", index=False)
    config_path = write_project(
        root,
        search="{num_samples: 2, max_concurrent: 2, max_boosting_rounds: 20, time_budget_s: 120}",
        models="[logistic_regression]",
        extra=(
            f"monitoring: {{window_rows: {WINDOW}, drift_share: 0.3,\n"
            f"             consecutive_windows: {consecutive_windows}, cooldown_s: {cooldown_s},\n"
            f"             report_every: 1000, retrain_source: {retrain_source},\n"
            f"             promote: {promote}}}\n"
            + ("serving: {canary: {version: challenger, fraction: 0.2}}\n" if promote == "canary" else "")
            + gate
        ),
    )
    config = load_config(config_path)
    registry = open_registry(config)
    registry.promote(register_model(registry, make_churn(3000, seed=3), Schema.from_config(config)))
    return config_path


def _served(frame: pd.DataFrame, version: str = "v1") -> pd.DataFrame:
    """Rows as the prediction log hands them to the monitor."""
    logged = frame.drop(columns=["churned"]).copy()
    logged["prediction"] = "no"
    logged["model_version"] = version
    return logged


@pytest.fixture
def monitor_of() -> Iterator:  # type: ignore[type-arg]
    """Starts monitors and always stops them (by name) at the end of the test."""
    from raymlops.monitoring.monitor import start_monitor, stop_monitor

    started: list[str] = []

    def start(config_path: Path):  # type: ignore[no-untyped-def]
        started.append(load_config(config_path).name)
        return start_monitor(config_path, follow_s=0.5)

    yield start
    for name in started:
        stop_monitor(name)


def _retrain_jobs(run: str) -> list:  # type: ignore[type-arg]
    from ray.job_submission import JobSubmissionClient

    from raymlops.runtime import connected_jobs_address

    jobs = JobSubmissionClient(connected_jobs_address()).list_jobs()
    return [j for j in jobs if (j.submission_id or "").startswith(f"raymlops-retrain-churn-{run}-")]


def _wait_for_job_end(monitor, timeout_s: float = 240) -> dict:  # type: ignore[no-untyped-def, type-arg]
    import ray

    assert ray.get(monitor.wait_idle.remote(timeout_s), timeout=timeout_s + 30), "monitor settles"
    return ray.get(monitor.status.remote())


def _drift_until_a_retrain_ends(monitor) -> dict:  # type: ignore[no-untyped-def, type-arg]
    """Two drifted windows (the rule's consecutive_windows), then the job's end."""
    import ray

    drifted = _served(make_churn(WINDOW * 2, seed=8, drift=True))
    for i in range(2):
        ray.get(monitor.ingest.remote(drifted.iloc[i * WINDOW : (i + 1) * WINDOW], wait=True))
    return _wait_for_job_end(monitor)


def test_traffic_like_the_training_data_never_retrains(tmp_path: Path, monitor_of) -> None:  # type: ignore[no-untyped-def]
    import ray

    config_path = _project(tmp_path, retrain_source="./data/train.csv")
    monitor = monitor_of(config_path)
    for seed in range(10):
        ray.get(monitor.ingest.remote(_served(make_churn(WINDOW, seed=100 + seed)), wait=True))
    status = _wait_for_job_end(monitor, timeout_s=120)
    assert status["windows_seen"] == 10
    assert status["jobs"] == [], status["recent_decisions"]
    assert not any(d["drifted"] for d in status["recent_decisions"]), [
        (d["share"], d["drifted_columns"]) for d in status["recent_decisions"]
    ]
    assert _retrain_jobs(status["run"]) == []
    saved = json.loads((tmp_path / "store" / "monitoring" / "churn" / "state.json").read_text())
    assert saved["windows_seen"] == 10, "the state is persisted after each decision"


def test_a_retrain_decided_before_a_crash_is_submitted_once_and_a_failure_alerts(
    tmp_path: Path, monitor_of
) -> None:  # type: ignore[no-untyped-def]
    """The monitor saved its decision to retrain, then died before submitting the job: its
    state on storage names the job in flight, and no such job exists. Started, it submits that
    job; a drifted window meanwhile starts no second one (cooldown 0: only the in-flight rule
    holds it back); killed with the job in flight, it comes back with every decided window
    and sends the same id again, which Ray refuses. The job fails (its data breaks the schema):
    an alert, and the champion keeps serving."""
    import ray

    from raymlops.monitoring.policy import MonitorState, decide, state_path

    broken = make_churn(400, seed=9)
    broken["tenure_months"] = broken["tenure_months"].astype(object)
    broken.loc[5, "tenure_months"] = "eleven"
    (tmp_path / "incoming").mkdir()
    broken.to_csv(tmp_path / "incoming" / "fresh.csv", index=False)
    config_path = _project(
        tmp_path, retrain_source="./incoming/fresh.csv", consecutive_windows=1, cooldown_s=0
    )
    config = load_config(config_path)
    # given: what a crash between saving the decision and submitting the job leaves behind
    run = f"crash{time.time_ns() % 10**9}"
    crashed, decision = decide(
        MonitorState(run=run), config.monitoring, share=1.0, now=time.time(), model="churn"
    )
    assert decision.retrain, decision.reasons
    job_id = decision.submission_id
    open_registry(config).storage.write_json(state_path("churn"), crashed.to_dict())
    assert _retrain_jobs(run) == [], "nothing was submitted before the crash"

    # when: the monitor starts from that state, and a drifted window arrives
    monitor = monitor_of(config_path)
    drifted = _served(make_churn(WINDOW, seed=7, drift=True))
    ray.get(monitor.ingest.remote(drifted, wait=True))
    first = wait_for_condition(
        lambda: (s := ray.get(monitor.status.remote()))["windows_seen"] == 2 and s,
        timeout_s=120,
        message="the drifted window is decided",
    )
    assert [j.submission_id for j in _retrain_jobs(run)] == [job_id], "submitted after the crash"
    second = first["recent_decisions"][-1]
    assert second["drifted"], second
    assert not second["retrain"], second
    assert f"retrain {job_id} is still in flight" in second["reasons"][-1], second["reasons"]

    # and: killed again, it comes back from the saved state (the job perhaps still in flight)
    ray.kill(monitor, no_restart=False)  # Ray restarts it (max_restarts=-1)
    restarted = wait_for_condition(
        lambda: (s := ray.get(monitor.status.remote(), timeout=30))["pid"] != first["pid"] and s,
        timeout_s=90,
        message="the monitor came back in a new process",
    )
    assert restarted["run"] == run
    assert restarted["windows_seen"] == 2, "every decided window survives the restart"
    status = _wait_for_job_end(monitor)

    # then: one job, the one decided before the crash; it failed and alerts
    jobs = _retrain_jobs(run)
    assert [j.submission_id for j in jobs] == [job_id]
    assert [(j["submission_id"], j["status"]) for j in status["jobs"]] == [(job_id, "FAILED")]
    assert status["alerts"], "a failed retrain raises an alert"
    assert job_id in status["alerts"][0]
    assert status["windows_seen"] == 2
    assert open_registry(config).aliases()["champion"] == "v1"


def test_a_worse_retrained_model_is_registered_but_not_promoted(tmp_path: Path, monitor_of) -> None:  # type: ignore[no-untyped-def]
    """The retrain data teaches the opposite of the truth on its training side and keeps the
    truth on its holdout side, so the challenger is worse than the champion there: the gate
    turns it down, the reason is recorded, and lineage names the parent and the report."""

    config_path = _project(tmp_path, retrain_source="./incoming/fresh.csv")
    config = load_config(config_path)
    fresh = make_churn(3000, seed=21, drift=True)
    train_side = ~holdout_mask(
        np.arange(len(fresh)), fraction=config.data.split.test_fraction, seed=config.data.split.seed
    )
    fresh.loc[train_side, "churned"] = fresh.loc[train_side, "churned"].map({"yes": "no", "no": "yes"})
    (tmp_path / "incoming").mkdir()
    fresh.to_csv(tmp_path / "incoming" / "fresh.csv", index=False)
    monitor = monitor_of(config_path)
    status = _drift_until_a_retrain_ends(monitor)
    assert [j["status"] for j in status["jobs"]] == ["SUCCEEDED"], status["jobs"]
    registry = open_registry(config)
    assert registry.versions() == ["v1", "v2"]
    assert registry.aliases()["champion"] == "v1", "the worse model is not promoted"
    outcome = json.loads((tmp_path / "store" / "monitoring" / "churn" / "retrains" / "v2.json").read_text())
    assert outcome["promoted"] is False
    assert outcome["gate"]["passed"] is False
    assert any("roc_auc" in reason for reason in outcome["gate"]["reasons"]), outcome["gate"]
    lineage = BundleReader(registry, "v2").lineage()
    assert lineage["retrain"]["parent_version"] == "v1"
    assert lineage["retrain"]["trigger_window"] == 2
    assert lineage["retrain"]["trigger_report"] == status["reports"][0]
    assert lineage["retrain"]["submission_id"] == status["jobs"][0]["submission_id"]


def test_a_flood_keeps_memory_to_a_window_and_counts_every_row(tmp_path: Path, monitor_of) -> None:  # type: ignore[no-untyped-def]
    """200 windows offered at once, without waiting (as the prediction log offers them): at most
    one open window and a few cut ones are held; every row is checked, waiting, or counted as
    dropped, none silently lost."""
    import ray

    config_path = _project(tmp_path, retrain_source="./data/train.csv")
    monitor = monitor_of(config_path)
    chunk = _served(make_churn(WINDOW // 4, seed=5))  # the log hands over small frames
    offered = 0
    refs = []
    for _ in range(800):
        refs.append(monitor.ingest.remote(chunk))
        offered += len(chunk)
    dropped = sum(ray.get(refs))
    peak = ray.get(monitor.status.remote())
    assert peak["buffered_rows"] < WINDOW, "one open window at most"
    assert peak["pending_windows"] <= 4
    assert peak["dropped_rows"] > 0, "the worker cannot check 200 windows at once"
    assert ray.get(monitor.wait_idle.remote(120))
    status = ray.get(monitor.status.remote())
    assert status["received_rows"] == offered
    assert dropped == status["dropped_rows"], "each drop is reported to the caller that caused it"
    checked = status["windows_seen"] * WINDOW
    assert checked + status["dropped_rows"] + status["buffered_rows"] == offered


def test_monitor_commands_start_show_and_stop_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import ray

    from raymlops.cli import main
    from raymlops.monitoring.monitor import get_monitor

    config_path = _project(tmp_path, retrain_source="./data/train.csv")
    address = ray.get_runtime_context().gcs_address
    config = ["--config", str(config_path)]
    assert main(["monitor", "status", *config]) == 2, "nothing to show before a start"
    assert "no monitor state for churn" in capsys.readouterr().err
    assert main(["monitor", "start", *config]) == 2, "a laptop monitor needs a cluster address"
    assert "needs a running Ray cluster" in capsys.readouterr().err
    try:
        assert main(["monitor", "start", *config, "--address", address]) == 0
        assert "monitor:churn started" in capsys.readouterr().out
        monitor = get_monitor("churn")
        assert monitor is not None
        ray.get(monitor.ingest.remote(_served(make_churn(WINDOW, seed=6)), wait=True))
        assert ray.get(monitor.wait_idle.remote(60))
        assert main(["monitor", "status", *config, "--address", address]) == 0
        shown = capsys.readouterr().out
        assert "monitor:churn (live)" in shown
        assert "windows seen" in shown
        # without an address, the saved state says whether the monitor runs (its pid is alive)
        assert main(["monitor", "status", *config]) == 0
        shown = capsys.readouterr().out
        assert "monitor:churn (saved)" in shown
        assert "running, pid" in shown
    finally:
        assert main(["monitor", "stop", *config, "--address", address]) == 0
    assert "stopped after 1 windows" in capsys.readouterr().out
    assert get_monitor("churn") is None
    assert main(["monitor", "status", *config]) == 0
    shown = capsys.readouterr().out
    assert "monitor:churn (saved)" in shown
    assert "not running; state saved" in shown


def test_a_canary_first_retrain_moves_the_challenger_and_promote_canary_finishes(
    tmp_path: Path, monitor_of, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    """``monitoring.promote: canary``: the retrained model passes the gate and becomes the
    challenger (the canary's alias), not the champion; ``registry promote --canary`` ends it."""

    from raymlops.cli import main

    (tmp_path / "incoming").mkdir(parents=True)
    make_churn(3000, seed=22, drift=True).to_csv(tmp_path / "incoming" / "fresh.csv", index=False)
    config_path = _project(tmp_path, retrain_source="./incoming/fresh.csv", promote="canary")
    monitor = monitor_of(config_path)
    status = _drift_until_a_retrain_ends(monitor)
    assert [j["status"] for j in status["jobs"]] == ["SUCCEEDED"], status["jobs"]
    registry = open_registry(load_config(config_path))
    assert registry.aliases() == {"champion": "v1", "challenger": "v2"}
    outcome = json.loads((tmp_path / "store" / "monitoring" / "churn" / "retrains" / "v2.json").read_text())
    assert outcome["gate"]["passed"] is True
    assert outcome["promoted"] is False
    assert outcome["alias"] == "challenger"
    assert main(["registry", "promote", "--config", str(config_path), "--canary"]) == 0
    assert "champion: v1 → v2" in capsys.readouterr().out
    assert registry.aliases()["champion"] == "v2"
