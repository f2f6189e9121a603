"""A registry version loaded for prediction: verified files, the same transform as training.

:func:`load_predictor` reads every file it needs through :meth:`Registry.read_verified` (sha256
checked before anything is deserialised) and returns a :class:`Predictor` that validates raw
rows against the version's own schema, applies its feature pipeline and its model. Training's
evaluation, batch inference and serving all predict through this one class.

Example:
    >>> predictor = load_predictor(registry, "champion")  # doctest: +SKIP
    >>> predictor.predict(pd.DataFrame([{"age": 42, "plan": "pro"}])).labels  # doctest: +SKIP
    ['no']
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from raymlops.data.validation import validate_frame
from raymlops.errors import DataValidationError, IntegrityError
from raymlops.features.pipeline import FeaturePipeline
from raymlops.registry.bundle import VersionBundle
from raymlops.registry.store import Registry
from raymlops.schema import Schema
from raymlops.training.models import load_model, predict_scores

__all__ = ["Prediction", "Predictor", "load_predictor", "read_reference"]


@dataclass(frozen=True)
class Prediction:
    """Labels (or values), and class probabilities for classification."""

    labels: list[Any]
    probabilities: np.ndarray | None
    scores: np.ndarray


@dataclass(frozen=True)
class Predictor:
    """A loaded model version: schema, feature pipeline and model, ready to predict."""

    name: str
    version: str
    kind: str
    schema: Schema
    pipeline: FeaturePipeline
    model: Any
    metrics: dict[str, Any]

    @property
    def n_classes(self) -> int:
        return len(self.pipeline.target.classes)

    def validate(self, raw: pd.DataFrame, *, require_target: bool = False) -> pd.DataFrame:
        """Raw rows -> typed rows of this version's schema, or DataValidationError."""
        typed, report = validate_frame(raw, self.schema, require_target=require_target)
        if not report.ok:
            raise DataValidationError(report.render(), report=report)
        return typed

    def scores(self, typed: pd.DataFrame) -> np.ndarray:
        """Probabilities (n, k) or values (n,) for typed rows."""
        features = self.pipeline.transform(typed).to_numpy(dtype=np.float64)
        return predict_scores(self.model, self.kind, self.schema.task, features, self.n_classes)

    def predict(self, typed: pd.DataFrame) -> Prediction:
        """Predict typed rows (see :meth:`validate`)."""
        scores = self.scores(typed)
        if self.schema.task == "classification":
            labels = self.pipeline.target.decode(scores.argmax(axis=1))
            return Prediction(labels, scores, scores)
        return Prediction([float(v) for v in scores], None, scores)


def load_predictor(registry: Registry, ref: str = "champion") -> Predictor:
    """Load ``ref`` (version or alias) after checking each file against the manifest.

    Raises:
        RegistryError: no such version or alias.
        IntegrityError: a file does not match its sha256, or the model file is not loadable.
    """
    manifest = registry.manifest(ref)
    version = manifest["version"]

    def read(filename: str) -> bytes:
        return registry.read_verified(version, filename, manifest)

    summary = manifest.get("summary", {})
    kind = summary.get("model")
    model_file = summary.get("model_file")
    if not kind or not model_file:
        raise IntegrityError(f"{registry.name} {version}: manifest does not name its model file")
    schema = Schema.from_dict(json.loads(read(VersionBundle.SCHEMA)))
    pipeline = FeaturePipeline.from_json(read(VersionBundle.FEATURES))
    metrics = json.loads(read(VersionBundle.METRICS))
    try:
        model = load_model(kind, read(model_file))
    except Exception as exc:  # a verified file that still does not load is a registry problem
        raise IntegrityError(
            f"{registry.name} {version}: cannot load {model_file}: {exc}"
        ) from None
    return Predictor(registry.name, version, kind, schema, pipeline, model, metrics)


def read_reference(registry: Registry, ref: str = "champion") -> pd.DataFrame:
    """The version's reference sample (training rows kept for drift comparison)."""
    manifest = registry.manifest(ref)
    data = registry.read_verified(manifest["version"], VersionBundle.REFERENCE, manifest)
    return pd.read_parquet(io.BytesIO(data))
