"""The gate: the first model passes, a worse one never does, ties and guards as configured."""

from __future__ import annotations

import pytest

from raymlops.config import GateConfig
from raymlops.training.gate import decide

CHAMPION = {"roc_auc": 0.90, "accuracy": 0.85, "f1": 0.7, "log_loss": 0.30}


def test_first_model_becomes_champion() -> None:
    decision = decide("roc_auc", CHAMPION, None, GateConfig())
    assert decision.passed
    assert "no champion yet" in decision.reasons[0]


@pytest.mark.parametrize("metric", ["roc_auc", "accuracy", "f1", "log_loss"])
def test_a_worse_challenger_never_passes(metric: str) -> None:
    worse = dict(CHAMPION)
    worse[metric] = CHAMPION[metric] + (0.05 if metric == "log_loss" else -0.05)
    decision = decide(
        metric, worse, CHAMPION, GateConfig(min_improvement=0.0, max_metric_drop=None)
    )
    assert not decision.passed
    assert metric in decision.reasons[0]
    assert "<" in decision.reasons[0]


def test_lower_is_better_metrics_improve_downwards() -> None:
    better = dict(CHAMPION, log_loss=0.2)
    assert decide("log_loss", better, CHAMPION, GateConfig()).passed


def test_min_improvement_is_required() -> None:
    slightly = dict(CHAMPION, roc_auc=0.905)
    assert not decide("roc_auc", slightly, CHAMPION, GateConfig(min_improvement=0.01)).passed
    assert decide("roc_auc", slightly, CHAMPION, GateConfig(min_improvement=0.001)).passed


def test_a_tie_passes_with_zero_min_improvement() -> None:
    assert decide("roc_auc", dict(CHAMPION), CHAMPION, GateConfig(min_improvement=0.0)).passed


def test_guard_metrics_may_not_drop_too_far() -> None:
    better_auc_worse_f1 = dict(CHAMPION, roc_auc=0.95, f1=0.5)
    decision = decide("roc_auc", better_auc_worse_f1, CHAMPION, GateConfig(max_metric_drop=0.1))
    assert not decision.passed
    assert any("f1 got worse by 0.2000" in r for r in decision.reasons)
    assert decide("roc_auc", better_auc_worse_f1, CHAMPION, GateConfig(max_metric_drop=None)).passed


def test_undefined_challenger_metric_fails() -> None:
    nan = dict(CHAMPION, roc_auc=float("nan"))
    assert not decide("roc_auc", nan, CHAMPION, GateConfig()).passed
