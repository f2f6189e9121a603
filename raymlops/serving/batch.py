"""Batch inference with Ray Data: validate the rows, predict with an actor pool, write Parquet.

Each actor of the pool loads the registry version once (sha256-verified) and predicts blocks
through the same :class:`~raymlops.predictor.Predictor` and the same numpy kernels as serving
(:meth:`~raymlops.predictor.Predictor.predict_columns`), so a row gets the same answer from the
batch job, over HTTP and in-process.

Example:
    >>> result = batch_predict(config, "new_rows.csv", "predictions/")  # doctest: +SKIP
    >>> result.rows, result.version
    (10000, 'v3')
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd
import pyarrow.parquet as pq
import ray

from raymlops.config import ProjectConfig
from raymlops.data.dataset import ROW_ID, load_validated
from raymlops.predictor import load_predictor
from raymlops.registry import Registry
from raymlops.storage import Storage

__all__ = ["BatchResult", "batch_predict", "read_predictions"]


@dataclass(frozen=True)
class BatchResult:
    """What a batch job did: rows in and out, the version used, where the output went."""

    rows: int
    version: str
    output: str
    seconds: float


class _PredictorActor:
    """One loaded version per actor; predicts typed blocks."""

    def __init__(self, storage: str, name: str, version: str) -> None:
        registry = Registry(Storage.from_uri(storage, create=False), name)
        self.predictor = load_predictor(registry, version)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        # the serving kernels: numpy transform compiled from features.json, inplace_predict
        prediction = self.predictor.predict_columns(self.predictor.typed_columns(batch))
        out = batch.copy()
        out["prediction"] = prediction.labels
        if prediction.probabilities is not None:
            for i, label in enumerate(self.predictor.pipeline.target.classes):
                out[f"probability_{label}"] = prediction.probabilities[:, i]
        out["model_version"] = self.predictor.version
        return out


def batch_predict(
    config: ProjectConfig, source: str, output: str, *, alias: str = "champion", actors: int = 2
) -> BatchResult:
    """Predict every row of ``source`` with the version behind ``alias``; write Parquet.

    Raises:
        ConfigError: the input does not exist.
        DataValidationError: rows break the version's schema (nothing is written).
    """
    started = time.perf_counter()
    registry = Registry(Storage.from_uri(config.storage, create=False), config.name)
    predictor = load_predictor(registry, alias)  # verify once here, before any actor starts
    data = load_validated(source, predictor.schema, require_target=False)
    cpus = ray.cluster_resources().get("CPU", 1)
    predicted = data.dataset.map_batches(
        _PredictorActor,
        fn_constructor_args=(config.storage, config.name, predictor.version),
        batch_format="pandas",
        concurrency=max(1, min(actors, int(cpus))),
        num_cpus=1,
    )
    # the input's row number travels with each prediction, to join results back; 1-based, as
    # in every message raymlops prints (row 1 is the first data row)
    predicted = predicted.map_batches(
        lambda b: b.rename(columns={ROW_ID: "row"}).assign(row=lambda f: f["row"] + 1),
        batch_format="pandas",
    )
    predicted.write_parquet(output)
    return BatchResult(
        rows=data.rows,
        version=predictor.version,
        output=output,
        seconds=time.perf_counter() - started,
    )


def read_predictions(output: str) -> pd.DataFrame:
    """All Parquet files of a batch output, in input row order (for tests and notebooks)."""
    # plain numpy dtypes, whatever pandas dtypes the writing blocks had
    frame = pq.read_table(output).to_pandas(ignore_metadata=True)
    return frame.sort_values("row").reset_index(drop=True)
