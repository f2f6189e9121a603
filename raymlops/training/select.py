"""Stage 2, select: the Tune search, then the best trial's model (refit on all training rows).

Example:
    >>> chosen = search_and_refit(config, prepared, StageLog())  # doctest: +SKIP
    >>> chosen.model_file  # doctest: +SKIP
    'model.ubj'
"""

from __future__ import annotations

from dataclasses import dataclass

from raymlops.config import ProjectConfig
from raymlops.training.prepare import Prepared
from raymlops.training.search import SearchResult, TrialResult, refit, run_search
from raymlops.training.stages import StageLog

__all__ = ["Selected", "search_and_refit"]


@dataclass(frozen=True)
class Selected:
    """The search's trials and the chosen model's native file."""

    search: SearchResult
    model_file: str
    model_bytes: bytes

    @property
    def best(self) -> TrialResult:
        return self.search.best


def search_and_refit(
    config: ProjectConfig, prepared: Prepared, stages: StageLog, *, verbose: int = 1
) -> Selected:
    """Run the search on the prepared arrays and refit its best trial.

    Raises:
        RaymlopsError: no trial produced a score.
    """
    fit, valid = prepared.fit, prepared.valid
    with stages.stage("search (Ray Tune)") as note:
        search = run_search(
            config.training,
            (fit.x, fit.y),
            (valid.x, valid.y),
            n_classes=prepared.n_classes,
            verbose=verbose,
        )
        best = search.best
        note["detail"] = (
            f"{len(search.trials)} trials; best {best.model} #{best.index} "
            f"{search.metric}={best.score:.4f}"
        )
    with stages.stage("refit best on all training rows") as note:
        data = prepared.train_arrays
        model_file, model_bytes = refit(
            best, data.x, data.y, config.training, n_classes=prepared.n_classes
        )
        note["detail"] = f"{model_file} ({len(model_bytes) / 1024:.0f} KiB)"
    return Selected(search, model_file, model_bytes)
