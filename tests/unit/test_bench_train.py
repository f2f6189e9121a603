"""The training benchmark's verdicts (pure): the issue's goals from its cells, and what the
two-node cell must show. The cells themselves run in the quick benchmark test (integration)
and, for the cluster cell, by hand: ``benchmarks/train.py --two-nodes`` (or the end of
``--full``)."""

from __future__ import annotations

from typing import Any

from benchmarks.train import goals, two_node_problems


def _cell(rows: int, trials: int, ratio: float, prep_ratio: float, rss: float) -> dict[str, Any]:
    return {
        "rows": rows,
        "trials": trials,
        "ratio": ratio,
        "prep_ratio": prep_ratio,
        "raymlops": {"peak_rss": rss},
    }


def test_goals_are_measured_on_the_issues_cells_only() -> None:
    found = goals(
        [
            _cell(1_000_000, 2, 3.0, 9.0, 5e9),  # no goal at 1M rows
            _cell(2_000_000, 4, 0.98, 3.0, 0.5e9),
            _cell(4_000_000, 2, 1.3, 2.1, 0.6e9),
        ]
    )
    assert [(g["goal"], g["met"]) for g in found] == [
        ("wall <= 1x pandas + xgboost at 2M rows, 4 trials", True),
        ("driver peak RSS < 1 GB at 4,000,000 rows", True),
        ("data prep < 2x pandas at 4,000,000 rows", False),
    ]


def _run(auc: float, nodes: list[tuple[str, int]]) -> dict[str, Any]:
    return {
        "holdout_auc": auc,
        "trial_nodes": [{"node_id": n, "fit_rows": rows} for n, rows in nodes],
    }


def test_two_node_cell_passes_with_two_nodes_and_halves_of_the_rows() -> None:
    one = _run(0.8600, [("a", 1000)])
    assert two_node_problems(one, _run(0.8620, [("a", 500), ("b", 500)]), 0.005) == []


def test_two_node_cell_names_each_thing_it_misses() -> None:
    one = _run(0.8600, [("a", 1000)])
    same_node = two_node_problems(one, _run(0.86, [("a", 500), ("a", 500)]), 0.005)
    assert same_node == [
        f"the 2-worker trial did not run on 2 nodes: {_run(0, [('a', 500), ('a', 500)])['trial_nodes']}"
    ]
    one_holds_all = two_node_problems(one, _run(0.86, [("a", 1000), ("b", 0)]), 0.005)
    assert one_holds_all == ["a worker held every fit row: [1000, 0]"]
    far = two_node_problems(one, _run(0.8700, [("a", 500), ("b", 500)]), 0.005)
    assert far == ["holdout AUC 2 workers vs 1 differs by 0.0100 > 0.005"]


def test_the_full_runs_cluster_cell_is_the_last_goal() -> None:
    """--full ends with the data-parallel cell on 2 nodes: its verdict is a goal of the run."""
    one = _run(0.8600, [("a", 1000)])
    for two, met in (
        (_run(0.8610, [("a", 500), ("b", 500)]), True),
        (_run(0.8610, [("a", 1000), ("b", 0)]), False),
    ):
        cell = {
            "runs": {1: one, 2: two},
            "auc_gap": 0.001,
            "problems": two_node_problems(one, two, 0.005),
        }
        (found,) = goals([], cell)
        assert found["goal"] == (
            "a data-parallel trial on 2 nodes trains on data no worker holds in full"
        )
        assert found["met"] is met
        assert "on 2 nodes" in found["measured"]
