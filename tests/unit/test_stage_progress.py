"""``raymlops train`` on a terminal: the search stage's bar (trials ended of all, best so far)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from raymlops import cli
from raymlops.training.stages import StageLog


def rendered(console: Console) -> str:
    [progress] = cli._live
    shown = Console(file=io.StringIO(), width=console.width, record=True, color_system=None)
    shown.print(progress.get_renderable())
    return shown.export_text()


def test_the_search_stage_shows_trials_ended_of_all_and_the_best_so_far(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    terminal = Console(file=io.StringIO(), force_terminal=True, width=120, color_system=None)
    monkeypatch.setattr(cli, "err", terminal)
    monkeypatch.setattr(cli, "_ray_log", object())  # quiet: Ray's output goes to a log file
    monkeypatch.setattr(cli, "_live", [])
    stages = cli._stage_printer()
    with stages.stage("search (Ray Tune)") as note:
        line = rendered(terminal)
        assert "search (Ray Tune) ..." in line
        assert "━" not in line, "no bar before the total is known"
        assert "trials" not in line
        stages.progress("search (Ray Tune)", 0, 8, "")
        assert "0/8 trials" in rendered(terminal)
        stages.progress("search (Ray Tune)", 3, 8, "best roc_auc 0.8123")
        line = rendered(terminal)
        assert "3/8 trials, best roc_auc 0.8123" in line
        assert "━" in line, f"a bar: {line!r}"
        note["detail"] = "8 trials"
    assert cli._live == [], "the bar ends with its stage"
    assert "✓ search (Ray Tune) (0.0s) 8 trials\n" in terminal.file.getvalue()


def test_progress_without_a_display_is_a_no_op() -> None:
    StageLog().progress("search (Ray Tune)", 1, 2, "best roc_auc 0.5")  # nothing to call


def test_progress_on_a_terminal_without_a_bar_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not a terminal (a pipe, CI): no spinner, no bar, only the stage lines."""
    piped = Console(file=io.StringIO(), force_terminal=False, width=120)
    monkeypatch.setattr(cli, "err", piped)
    monkeypatch.setattr(cli, "_ray_log", object())
    monkeypatch.setattr(cli, "_live", [])
    stages = cli._stage_printer()
    with stages.stage("search (Ray Tune)"):
        stages.progress("search (Ray Tune)", 3, 8, "best roc_auc 0.8123")
        assert cli._live == []
    assert piped.file.getvalue().splitlines() == ["✓ search (Ray Tune) (0.0s) "]


def test_the_search_callback_pickles_without_its_console(tmp_path: Path) -> None:
    """Tune pickles its run config, callbacks included, to save the experiment's state; the
    CLI's report function holds a console on the terminal, which does not pickle."""
    from ray import cloudpickle

    from raymlops.training.rungs import OrderedRungs
    from raymlops.training.search import _Progress

    with (tmp_path / "terminal").open("w") as terminal:
        events: list[tuple[int, int, float | None]] = []

        def report(*event: object) -> None:
            print(event, file=terminal)
            events.append(event)  # type: ignore[arg-type]

        rungs = OrderedRungs([], reduction_factor=3, mode="max")
        callback = _Progress(report, 2, "max", rungs)
        copy = cloudpickle.loads(cloudpickle.dumps(callback))
        assert copy.report is None
        assert callback.report is report, "the one Tune runs with still reports"

        class Trial:
            config = {"trial": 0}  # noqa: RUF012

        rungs.add_trial(0, max_steps=1)
        rungs.record(0, step=1, score=0.75)
        callback.on_trial_complete(1, [], Trial())
        copy.on_trial_complete(1, [], Trial())
    assert events == [(1, 2, 0.75)]
