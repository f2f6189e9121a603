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
    checks.json               the dataset checks' findings
    model_card.md / .html     the model card (raymlops.registry.card), written at registration
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

from raymlops.registry.card import CARD_HTML, CARD_MD, CardData, render_card
from raymlops.registry.store import MANIFEST, SCHEMA, Registry

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
    SCHEMA: ClassVar[str] = SCHEMA
    REFERENCE: ClassVar[str] = "reference.parquet"
    METRICS: ClassVar[str] = "metrics.json"
    GATE: ClassVar[str] = "gate.json"
    LINEAGE: ClassVar[str] = "lineage.json"
    TRIALS: ClassVar[str] = "trials.json"
    CHECKS: ClassVar[str] = "checks.json"
    CARD_MD: ClassVar[str] = CARD_MD
    CARD_HTML: ClassVar[str] = CARD_HTML
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
    checks: dict[str, Any] | None = None  # the dataset checks' report
    parent_reference: pd.DataFrame | None = None  # for the card's distribution plots

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
            **({self.CHECKS: json_bytes(self.checks)} if self.checks is not None else {}),
        }

    def card(self, name: str, version: str) -> dict[str, bytes]:
        """The model card files of this bundle as version ``version`` of ``name``."""
        files = self.files()
        data = CardData.from_files(
            files, name=name, version=version, parent_reference=self.parent_reference
        )
        markdown, page = render_card(data)
        return {self.CARD_MD: markdown.encode(), self.CARD_HTML: page.encode()}

    def summary(self, **extra: Any) -> dict[str, Any]:
        """The manifest's summary: the model kind and file (readers find the model by them)."""
        return {"model": self.model_kind, "model_file": self.model_file, **extra}

    def register(self, registry: Registry, **summary: Any) -> str:
        """Write the bundle as a new version of ``registry``; returns its name (``v3``)."""
        return registry.register(
            self.files(),
            summary=self.summary(**summary),
            derived=lambda version: self.card(registry.name, version),
        )


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
