"""Stage 2, select: the Tune search, then the best trial's model.

By default (``search.refit: false``) the best trial's own model is registered when the trial
ran to its end (it was fitted on the rows Tune did not hold out for validation); with
``search.refit``, or when that model is not at hand, the best trial is fitted again on all
training rows, as far as it got.

Example:
    >>> chosen = search_and_refit(config, prepared, StageLog())  # doctest: +SKIP
    >>> chosen.model_file  # doctest: +SKIP
    'model.ubj'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from raymlops.config import ProjectConfig
from raymlops.training.prepare import Prepared
from raymlops.training.search import SearchResult, TrialResult, refit_parts, run_search
from raymlops.training.stages import StageLog

__all__ = ["Selected", "search_and_refit"]


@dataclass(frozen=True)
class Selected:
    """The search's trials and the chosen model's native file."""

    search: SearchResult
    model_file: str
    model_bytes: bytes
    refit: bool  # fitted again on all training rows (else: the best trial's own model)

    @property
    def best(self) -> TrialResult:
        return self.search.best


def search_and_refit(
    config: ProjectConfig, prepared: Prepared, stages: StageLog, *, verbose: int = 1
) -> Selected:
    """Run the search on the prepared arrays (ObjectRefs) and take its best model.

    Raises:
        RaymlopsError: no trial produced a score.
    """
    arrays, want_refit = prepared.arrays, config.training.search.refit
    with stages.stage("search (Ray Tune)") as note:
        search = run_search(
            config.training,
            arrays.fit,
            arrays.valid,
            n_classes=prepared.n_classes,
            verbose=verbose,
            keep_models=not want_refit,
        )
        best = search.best
        note["detail"] = (
            f"{len(search.trials)} trials; best {best.model} #{best.index} "
            f"{search.metric}={best.score:.4f}"
        )
    if not want_refit and best.model_path is not None:
        path = Path(best.model_path)
        return Selected(search, path.name, path.read_bytes(), refit=False)
    with stages.stage("refit best on all training rows") as note:
        model_file, model_bytes = refit_parts(
            best,
            arrays.fit,
            arrays.valid,
            arrays.valid_mask,
            config.training,
            n_classes=prepared.n_classes,
        )
        note["detail"] = f"{model_file} ({len(model_bytes) / 1024:.0f} KiB)"
    return Selected(search, model_file, model_bytes, refit=True)
