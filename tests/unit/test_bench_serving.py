"""The serving suite's arithmetic: the prediction log's cost from paired ratios."""

from __future__ import annotations

import pytest

from benchmarks.serving import NO_LOG, PLANS, prediction_log_cost


def test_the_log_cost_compares_each_cell_with_the_log_off() -> None:
    ratios = {
        ("float30", "default", 1, 1): 0.30,
        ("float30", NO_LOG, 1, 1): 0.30,
        ("float30", "default", 16, 1): 0.855,
        ("float30", NO_LOG, 16, 1): 0.90,
        ("float30", "default", 4, 100): 1.02,
        ("float30", NO_LOG, 4, 100): 1.00,
        ("churn", "default", 16, 1): 0.5,  # churn has no log-off cell: not counted
    }
    note = prediction_log_cost(ratios)
    assert "c1 1-row +0.0%" in note
    assert "c16 1-row +5.0%" in note
    assert "c4 100-row -2.0%" in note
    assert "goal: at most 5%" in note


def test_no_log_off_cell_no_note() -> None:
    assert prediction_log_cost({("float30", "default", 16, 1): 0.9}) == ""


@pytest.mark.parametrize("mode", ["standard", "full"])
def test_the_standard_and_full_runs_price_the_log(mode: str) -> None:
    assert ("float30", NO_LOG) in PLANS[mode]
    assert ("float30", NO_LOG) not in PLANS["quick"]  # CI's quick run stays short


def test_the_prediction_log_switch_keeps_the_runs_with_the_log_on_or_off() -> None:
    from benchmarks.__main__ import parse_args
    from benchmarks.serving import log_plan

    standard = PLANS["standard"]
    on = log_plan(standard, on=True)
    assert NO_LOG not in {p for _, p in on}
    assert ("float30", "default") in on
    assert ("float30", "serve-proxy") in on, "the other presets serve with the log on"
    assert log_plan(standard, on=False) == [("float30", NO_LOG), ("churn", NO_LOG)]
    assert log_plan(PLANS["quick"], on=False) == [("float30", NO_LOG), ("churn", NO_LOG)]
    assert parse_args(["--suite", "serving", "--prediction-log", "off"]).prediction_log == "off"
    with pytest.raises(SystemExit):
        parse_args(["--prediction-log", "maybe"])
