"""One version's files: their names, their layout and their encoding, in one place (pure).

Training builds a :class:`VersionBundle` and registers its :meth:`~VersionBundle.files`;
everything that reads a version back (predictor, CLI, monitor, tests, benchmarks) goes through
:class:`BundleReader`, which checks each file against the manifest before decoding it. No other
module spells a file name.

Layout of ``{storage}/models/{name}/versions/{vN}/``::

    model.ubj | model.skops   the model in its native format (named in the manifest's summary)
    features.json             the fitted feature pipeline
    schema.json               the schema the version validates rows against
    reference.parquet         training rows kept for drift comparison
    metrics.json              holdout metrics, validation score, the champion's on the same rows
    gate.json                 the gate's decision
    lineage.json              where the version came from
    trials.json               every trial of the search
    MANIFEST.json             sha256 and size of each file; written last

Example:
    >>> reader = BundleReader(registry, "champion")  # doctest: +SKIP
    >>> reader.metrics()["holdout"]["roc_auc"]  # doctest: +SKIP
    0.93
"""

from __future__ import annotations

import datetime as dt
import io
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from raymlops.registry.store import MANIFEST, Registry

__all__ = ["BundleReader", "VersionBundle", "json_bytes"]


def json_bytes(payload: Any) -> bytes:
    """Stable, readable JSON (sorted keys, numpy scalars and dates made plain)."""
    return json.dumps(payload, indent=2, sort_keys=True, default=_plain).encode() + b"\n"


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return str(value)


@dataclass(frozen=True)
class VersionBundle:
    """Everything a version holds, in memory, ready to register."""

    FEATURES: ClassVar[str] = "features.json"
    SCHEMA: ClassVar[str] = "schema.json"
    REFERENCE: ClassVar[str] = "reference.parquet"
    METRICS: ClassVar[str] = "metrics.json"
    GATE: ClassVar[str] = "gate.json"
    LINEAGE: ClassVar[str] = "lineage.json"
    TRIALS: ClassVar[str] = "trials.json"
    MANIFEST: ClassVar[str] = MANIFEST

    model_kind: str
    model_file: str
    model: bytes
    features_json: str
    schema: dict[str, Any]
    reference: pd.DataFrame
    metrics: dict[str, Any]
    gate: dict[str, Any]
    lineage: dict[str, Any]
    trials: list[dict[str, Any]] = field(default_factory=list)

    def files(self) -> dict[str, bytes]:
        """File name -> bytes, as :meth:`Registry.register` takes them."""
        buffer = io.BytesIO()
        self.reference.to_parquet(buffer, index=False)
        return {
            self.model_file: self.model,
            self.FEATURES: self.features_json.encode() + b"\n",
            self.SCHEMA: json_bytes(self.schema),
            self.REFERENCE: buffer.getvalue(),
            self.METRICS: json_bytes(self.metrics),
            self.GATE: json_bytes(self.gate),
            self.LINEAGE: json_bytes(self.lineage),
            self.TRIALS: json_bytes(self.trials),
        }

    def summary(self, **extra: Any) -> dict[str, Any]:
        """The manifest's summary: the model kind and file (readers find the model by them)."""
        return {"model": self.model_kind, "model_file": self.model_file, **extra}

    def register(self, registry: Registry, **summary: Any) -> str:
        """Write the bundle as a new version of ``registry``; returns its name (``v3``)."""
        return registry.register(self.files(), summary=self.summary(**summary))


class BundleReader:
    """A registered version's files, each checked against the manifest before it is decoded.

    The manifest is read once, so every file comes from the same version even if an alias
    moves while reading.
    """

    def __init__(self, registry: Registry, ref: str = "champion") -> None:
        self.registry = registry
        self.manifest = registry.manifest(ref)
        self.version: str = self.manifest["version"]

    @property
    def summary(self) -> dict[str, Any]:
        return dict(self.manifest.get("summary", {}))

    @property
    def model_kind(self) -> str | None:
        return self.summary.get("model")

    @property
    def model_file(self) -> str | None:
        return self.summary.get("model_file")

    def read(self, filename: str) -> bytes:
        """One file's verified bytes."""
        return self.registry.read_verified(self.version, filename, self.manifest)

    def _json(self, filename: str) -> Any:
        return json.loads(self.read(filename))

    def schema(self) -> dict[str, Any]:
        return self._json(VersionBundle.SCHEMA)

    def features_json(self) -> bytes:
        return self.read(VersionBundle.FEATURES)

    def metrics(self) -> dict[str, Any]:
        return self._json(VersionBundle.METRICS)

    def gate(self) -> dict[str, Any]:
        return self._json(VersionBundle.GATE)

    def lineage(self) -> dict[str, Any]:
        return self._json(VersionBundle.LINEAGE)

    def trials(self) -> list[dict[str, Any]]:
        return self._json(VersionBundle.TRIALS)

    def reference(self) -> pd.DataFrame:
        return pd.read_parquet(io.BytesIO(self.read(VersionBundle.REFERENCE)))

    def model_bytes(self) -> bytes:
        if not self.model_file:
            raise KeyError(f"{self.registry.name} {self.version}: manifest names no model file")
        return self.read(self.model_file)
