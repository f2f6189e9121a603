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
from raymlops.training.search import (
    DataParallel,
    SearchResult,
    TrialResult,
    refit_data_parallel,
    refit_parts,
    run_search,
)
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
    parallel = _data_parallel(prepared)
    stage = "search (Ray Tune)"
    metric = config.training.metric

    def progress(done: int, total: int, best: float | None) -> None:
        text = "" if best is None else f"best {metric} {best:.4f}"
        stages.progress(stage, done, total, text)

    with stages.stage(stage) as note:
        search = run_search(
            config.training,
            arrays.fit,
            arrays.valid,
            n_classes=prepared.n_classes,
            verbose=verbose,
            keep_models=not want_refit,
            parallel=parallel,
            progress=progress,
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
        if arrays.assembled:
            model_file, model_bytes = refit_parts(
                best,
                arrays.fit,
                arrays.valid,
                arrays.valid_mask,
                config.training,
                n_classes=prepared.n_classes,
            )
        else:  # no worker holds all the rows: refit over the trial's workers
            assert parallel is not None
            model_file, model_bytes = refit_data_parallel(
                best, parallel, config.training, n_classes=prepared.n_classes
            )
        note["detail"] = f"{model_file} ({len(model_bytes) / 1024:.0f} KiB)"
    return Selected(search, model_file, model_bytes, refit=True)


def _data_parallel(prepared: Prepared) -> DataParallel | None:
    """The shards of XGBoost's data-parallel trials (None: every trial has one worker)."""
    arrays = prepared.arrays
    if prepared.workers.workers < 2 or not arrays.fit_tables:
        return None
    from raymlops.training.distributed import Shards

    shards = Shards.from_tables(arrays.fit_tables, arrays.valid_tables)
    return DataParallel(shards, prepared.workers.workers, arrays.n_features)
