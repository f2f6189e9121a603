"""Quiet by default: Ray's output goes to a log file, the command's own lines stay on the terminal."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from raymlops.cli import _next_hint, _trials_table
from raymlops.output import capture, in_ray_job


def test_capture_sends_fd_output_to_the_log_and_keeps_the_console(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a console, when Ray-like output is written to fds 1 and 2 (as C++ and Ray's
    loggers do), then it lands in the log file; the console's own line does not."""
    monkeypatch.setenv("RAYMLOPS_LOG_DIR", str(tmp_path / "logs"))
    mine = io.StringIO()
    console = Console(file=mine)
    log = capture("train", [console])
    try:
        os.write(1, b"INFO streaming_executor.py -- Starting execution\n")
        os.write(2, b"W core_worker.cc: a C++ line\n")
        print("a Python print from a Ray callback", file=sys.__stderr__, flush=True)
        console.print("the command's own line")
    finally:
        log.restore()
    text = log.path.read_text()
    assert log.path.parent == tmp_path / "logs"
    assert "Starting execution" in text, "fd 1 goes to the log"
    assert "a C++ line" in text, "fd 2 goes to the log"
    assert "the command's own line" not in text
    assert "the command's own line" in mine.getvalue(), "the console writes where it did"
    assert oct(log.path.stat().st_mode & 0o777) == oct(0o600), "the log is private"
    log.restore()  # twice is harmless


def test_a_ray_job_driver_is_not_redirected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert not in_ray_job()
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", '{"runtime_env": {}}')
    assert in_ray_job(), "the job's log is where its output belongs"


def _result(passed: bool, promoted: bool) -> SimpleNamespace:
    trial = SimpleNamespace(
        index=0,
        model="xgboost",
        score=0.75,
        steps=10,
        status="done",
        error=None,
        time_s=0.3,
        params={"max_depth": 2, "eta": 0.0656123, "colsample_bytree": 0.84912},
    )
    return SimpleNamespace(
        version="v2",
        promoted=promoted,
        gate=SimpleNamespace(passed=passed),
        metric="roc_auc",
        trials=[trial],
        best_trial=trial,
    )


def test_the_next_hint_says_overrides_only_for_a_failed_gate() -> None:
    config = Path("p/raymlops.yaml")
    passed = _next_hint(_result(passed=True, promoted=False), config)
    assert "registry promote --config p/raymlops.yaml v2" in passed
    assert "overrides" not in passed, "a version that passed the gate overrides nothing"
    failed = _next_hint(_result(passed=False, promoted=False), config)
    assert "# overrides the failed gate" in failed
    assert "registry verify" in _next_hint(_result(passed=True, promoted=True), config)


@pytest.mark.parametrize("width", [80, 200])
def test_trials_table_never_wraps_a_number(width: int) -> None:
    """One line per trial at any width: params shown whole when they fit, else left out."""
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(_trials_table(_result(passed=True, promoted=True), width=width))
    text = console.export_text()
    rows = [line for line in text.splitlines() if "xgboost" in line]
    assert len(rows) == 1, text
    if width == 200:
        assert "eta=0.0656 colsample_bytree=0.849" in rows[0], text
    else:
        assert "eta=" not in text, "params that do not fit are not folded mid-number"
        assert "params in the log file" in " ".join(text.split())
