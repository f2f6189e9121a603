"""The serving suite's arithmetic: the prediction log's cost from paired ratios."""

from __future__ import annotations

import pytest

from benchmarks.serving import NO_LOG, PLANS, log_costs, prediction_log_cost


def _cells(rps: dict[tuple[int, int], list[tuple[float, float]]]) -> list[dict]:
    """A/B cells: per (connections, rows), one (on, off) requests/s per pair."""
    return [
        {"connections": conc, "rows": rows, "pair": pair, "side": side, "rps": value}
        for (conc, rows), pairs in rps.items()
        for pair, both in enumerate(pairs)
        for side, value in zip(("on", "off"), both, strict=True)
    ]


def test_the_log_cost_is_the_median_share_over_the_pairs_of_each_cell() -> None:
    cells = _cells(
        {
            (1, 1): [(100.0, 100.0), (99.0, 100.0), (101.0, 100.0)],  # 0%, 1%, -1%: 0%
            (16, 1): [(95.0, 100.0), (90.0, 100.0), (50.0, 100.0)],  # 5%, 10%, 50%: 10%
            (4, 100): [(102.0, 100.0)],
        }
    )
    costs = log_costs(cells)
    assert costs == {
        (1, 1): pytest.approx(0.0),
        (16, 1): pytest.approx(0.10),
        (4, 100): pytest.approx(-0.02),
    }
    note = prediction_log_cost(cells)
    assert "c1 1-row +0.0%" in note
    assert "c16 1-row +10.0%" in note
    assert "c4 100-row -2.0%" in note
    assert "3 alternated pair(s)" in note
    assert "goal: at most 5%" in note


def test_a_pair_missing_a_side_is_not_counted_and_no_cells_no_note() -> None:
    cells = _cells({(4, 100): [(90.0, 100.0)]})
    cells.append({"connections": 4, "rows": 100, "pair": 1, "side": "on", "rps": 10.0})
    assert log_costs(cells) == {(4, 100): pytest.approx(0.10)}
    assert prediction_log_cost([]) == ""


def test_the_log_ab_runs_in_every_mode_and_the_log_off_preset_only_on_request() -> None:
    from benchmarks.serving import LOG_AB_PAIRS

    assert LOG_AB_PAIRS["quick"] >= 1, "CI's quick run checks the A/B works"
    assert LOG_AB_PAIRS["standard"] >= 6, "a few percent needs more pairs than the ratios"
    assert ("float30", NO_LOG) not in PLANS["standard"]


def test_the_prediction_log_switch_keeps_the_runs_with_the_log_on_or_off() -> None:
    from benchmarks.__main__ import parse_args
    from benchmarks.serving import log_plan

    standard = [*PLANS["standard"], ("float30", NO_LOG)]
    on = log_plan(standard, on=True)
    assert NO_LOG not in {p for _, p in on}
    assert ("float30", "default") in on
    assert ("float30", "serve-proxy") in on, "the other presets serve with the log on"
    assert log_plan(standard, on=False) == [("float30", NO_LOG), ("churn", NO_LOG)]
    assert log_plan(PLANS["quick"], on=False) == [("float30", NO_LOG), ("churn", NO_LOG)]
    assert parse_args(["--suite", "serving", "--prediction-log", "off"]).prediction_log == "off"
    with pytest.raises(SystemExit):
        parse_args(["--prediction-log", "maybe"])
