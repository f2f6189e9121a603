"""The project config: strict, frozen pydantic models loaded from one YAML file per model.

The YAML is validated once, here, at the edge; the rest of raymlops receives typed objects.
Unknown keys are errors (with a "did you mean" hint), and so are wrong types: a config that
validates is one that runs.

Example:
    >>> cfg = load_config("examples/churn/raymlops.yaml")  # doctest: +SKIP
    >>> cfg.training.metric
    'roc_auc'
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from raymlops.errors import ConfigError
from raymlops.lineage import redact_uri

__all__ = [
    "CLASSIFICATION_METRICS",
    "REGRESSION_METRICS",
    "CardConfig",
    "ColumnSpec",
    "DataChecksConfig",
    "DataConfig",
    "GateConfig",
    "MonitoringConfig",
    "PredictionLogConfig",
    "ProjectConfig",
    "ServingConfig",
    "TrainingConfig",
    "config_hash",
    "format_validation_error",
    "load_config",
    "read_yaml",
]

ColumnType = Literal["float", "int", "bool", "category", "datetime", "string"]
ColumnRole = Literal["feature", "target", "timestamp", "id", "ignore"]
ModelKind = Literal["xgboost", "random_forest", "logistic_regression", "ridge"]
_TASK_ONLY_MODELS = {"logistic_regression": "classification", "ridge": "regression"}

#: metric name -> True when larger is better. The mode of the search and the gate comes from here.
CLASSIFICATION_METRICS: dict[str, bool] = {
    "roc_auc": True,
    "accuracy": True,
    "f1": True,
    "log_loss": False,
}
REGRESSION_METRICS: dict[str, bool] = {"rmse": False, "mae": False, "r2": True}

_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
#: what an API key may do: ``predict`` (the predict route), ``read`` (status, docs, schema)
ApiRole = Literal["predict", "read"]


class _Strict(BaseModel):
    """Base of every config model: unknown keys and silent type coercion are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ColumnSpec(_Strict):
    """One column of the schema. Numbers may be bounded; categories may be listed.

    ``role`` defaults to ``feature`` (``id`` for ``string`` columns, which are never features).
    ``unknown`` says what a category outside ``categories`` means: ``error`` rejects the row,
    ``ignore`` encodes it as "other".
    """

    type: ColumnType
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None
    unknown: Literal["error", "ignore"] = "error"
    role: ColumnRole | None = None
    format: str | None = Field(default=None, description="strftime format of a datetime column")
    description: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ColumnSpec:
        numeric = self.type in ("float", "int")
        if (self.min is not None or self.max is not None) and not numeric:
            raise ValueError(f"min/max apply to float and int columns, not to type {self.type!r}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if self.categories is not None:
            if self.type != "category":
                raise ValueError(f"categories apply to category columns, not to type {self.type!r}")
            if not self.categories:
                raise ValueError("categories is empty: list at least one or leave it out")
            if len(set(self.categories)) != len(self.categories):
                raise ValueError("categories has duplicates")
        if self.format is not None and self.type != "datetime":
            raise ValueError("format applies to datetime columns only")
        if self.type == "string" and self.role in ("feature",):
            raise ValueError("string columns cannot be features: use role id or ignore")
        return self

    @property
    def effective_role(self) -> ColumnRole:
        """The role, with the default filled in."""
        if self.role is not None:
            return self.role
        return "id" if self.type == "string" else "feature"


class SplitConfig(_Strict):
    """The train/holdout split.

    ``by: row`` (default): seeded and deterministic, by a hash of the row number.
    ``by: time``: the holdout is the latest ``test_fraction`` of rows by ``time_column`` (a
    datetime column with ``role: timestamp``; the only one when it is not named), so the model
    is judged on a period after the one it learned from. The cut is one timestamp: rows at or
    before it train, rows after it are held out, rows without a time train. The cut comes from
    per-block quantile sketches (201 points per block), so the holdout share is
    ``test_fraction`` up to that sketch's error and ties at the cut.
    """

    by: Literal["row", "time"] = "row"
    time_column: str | None = None
    test_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    seed: int = 42


CheckSeverity = Literal["block", "warn", "off"]


class DuplicatesRule(_Strict):
    """Rows that repeat an earlier row exactly: ``severity`` above ``max_share`` of all rows,
    and ``block`` above ``block_share`` (a dataset that is mostly copies), whatever the
    severity, unless the check is ``off``."""

    severity: CheckSeverity = "warn"
    max_share: float = Field(default=0.0, ge=0.0, le=1.0)
    block_share: float = Field(default=0.5, ge=0.0, le=1.0)


class SplitOverlapRule(_Strict):
    """Holdout rows whose feature values equal a training row's, above a share of the holdout.

    Skipped (with the reason) when every feature is discrete (a few categories, small ints):
    there equal feature rows on both sides are the nature of the data, not a leak. With a
    float feature, equal rows mean copies."""

    severity: CheckSeverity = "block"
    max_share: float = Field(default=0.01, ge=0.0, le=1.0)


class IdOverlapRule(_Strict):
    """Holdout rows whose ``role: id`` value also appears in training."""

    severity: CheckSeverity = "block"
    max_share: float = Field(default=0.0, ge=0.0, le=1.0)


class LeakageRule(_Strict):
    """One feature alone predicting the target: ROC AUC (classification), |correlation|."""

    severity: CheckSeverity = "block"
    auc: float = Field(default=0.99, gt=0.5, le=1.0)
    correlation: float = Field(default=0.95, gt=0.0, le=1.0)


class ConstantRule(_Strict):
    """A feature with a single value, or only nulls."""

    severity: CheckSeverity = "warn"


class LabelRule(_Strict):
    """A class under ``min_class_share`` of the labelled rows (one class only always blocks)."""

    severity: CheckSeverity = "warn"
    min_class_share: float = Field(default=0.01, ge=0.0, lt=0.5)


class ProfileShiftRule(_Strict):
    """Missing share or category set moved from the previous version's training profile."""

    severity: CheckSeverity = "warn"
    max_missing_change: float = Field(default=0.2, ge=0.0, le=1.0)


class DataChecksConfig(_Strict):
    """Dataset checks on every training run (``raymlops.data.checks``): ``block`` stops the
    run (exit 3, nothing registered), ``warn`` is recorded, ``off`` skips the check."""

    duplicates: DuplicatesRule = DuplicatesRule()
    split_overlap: SplitOverlapRule = SplitOverlapRule()
    id_overlap: IdOverlapRule = IdOverlapRule()
    leakage: LeakageRule = LeakageRule()
    constant: ConstantRule = ConstantRule()
    profile_shift: ProfileShiftRule = ProfileShiftRule()
    labels: LabelRule = LabelRule()

    def severity_of(self, check: str) -> CheckSeverity:
        """The configured severity of a check by name (``time_split`` follows ``leakage``)."""
        rule = getattr(self, "leakage" if check == "time_split" else check)
        return rule.severity


class DataConfig(_Strict):
    """Where the data is and what it must look like (the one schema)."""

    source: str = Field(min_length=1)
    target: str = Field(min_length=1)
    columns: dict[str, ColumnSpec] = Field(min_length=1)
    extra: Literal["error", "ignore"] = "error"
    split: SplitConfig = SplitConfig()
    reference_rows: int = Field(default=5000, ge=100, description="rows kept as drift reference")
    checks: DataChecksConfig = DataChecksConfig()

    @field_serializer("source", when_used="json")
    def _no_credentials(self, value: str) -> str:
        return redact_uri(value)  # lineage.json and other JSON dumps never hold credentials

    @field_validator("columns")
    @classmethod
    def _names_are_usable_fields(cls, columns: dict[str, ColumnSpec]) -> dict[str, ColumnSpec]:
        bad = [name for name in columns if not _usable_field_name(name)]
        if bad:
            fixes = ", ".join(f"{n!r} -> {n.lstrip('_') or 'column'!r}" for n in bad)
            raise ValueError(
                f"column name(s) {', '.join(repr(n) for n in bad)} cannot be fields of the HTTP "
                "request model (pydantic refuses names that start with '_' and its own "
                f"model_* names); rename them in the data and here, e.g. {fixes}"
            )
        return columns

    @model_validator(mode="after")
    def _target_is_consistent(self) -> DataConfig:
        spec = self.columns.get(self.target)
        if spec is not None and spec.role not in (None, "target"):
            raise ValueError(f"column {self.target!r} is the target but has role {spec.role!r}")
        others = [n for n, s in self.columns.items() if s.role == "target" and n != self.target]
        if others:
            raise ValueError(f"only data.target may have role target; also set on {others}")
        features = [
            n for n, s in self.columns.items() if n != self.target and s.effective_role == "feature"
        ]
        if not features:
            raise ValueError("no feature columns: at least one column needs role feature")
        return self

    @model_validator(mode="after")
    def _time_split_has_a_column(self) -> DataConfig:
        if self.split.by != "time":
            if self.split.time_column is not None:
                raise ValueError("split.time_column is set but split.by is 'row': set by: time")
            return self
        stamps = [
            n
            for n, s in self.columns.items()
            if s.effective_role == "timestamp" and s.type == "datetime"
        ]
        named = self.split.time_column
        if named is not None and named not in stamps:
            raise ValueError(
                f"split.time_column {named!r} is not a datetime column with role timestamp; "
                f"those are: {stamps or 'none'}"
            )
        if named is None and len(stamps) != 1:
            raise ValueError(
                "split.by is 'time' but "
                + ("no column is" if not stamps else f"{len(stamps)} columns are")
                + " a datetime with role timestamp: "
                + ("add one (type: datetime, role: timestamp)" if not stamps
                   else f"name one in split.time_column ({', '.join(stamps)})")
            )
        return self

    @property
    def split_time_column(self) -> str | None:
        """The column a ``by: time`` split cuts on (None for ``by: row``)."""
        if self.split.by != "time":
            return None
        if self.split.time_column is not None:
            return self.split.time_column
        return next(
            n for n, s in self.columns.items()
            if s.effective_role == "timestamp" and s.type == "datetime"
        )


class SearchConfig(_Strict):
    """The Tune search: how many trials, how many at once, early stopping, time budget.

    A trial reports its validation score every ``rounds_per_report`` XGBoost rounds (or 25
    forest trees); ``scheduler: asha`` stops weak trials at those reports.
    """

    num_samples: int = Field(default=16, ge=1, le=10_000)
    max_concurrent: int = Field(default=2, ge=1)
    scheduler: Literal["asha", "fifo"] = "asha"
    seed: int = 42
    time_budget_s: float | None = Field(default=600.0, gt=0)
    max_boosting_rounds: int = Field(default=200, ge=10)
    rounds_per_report: int = Field(default=10, ge=1)
    validation_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    refit: bool = Field(
        default=False,
        description="fit the best trial again on all training rows (default: register the best "
        "trial's own model; measured: the refit costs about one more trial for no AUC gain)",
    )

    @model_validator(mode="after")
    def _whole_reports(self) -> SearchConfig:
        if self.max_boosting_rounds % self.rounds_per_report:
            raise ValueError(
                f"max_boosting_rounds ({self.max_boosting_rounds}) must be a multiple of "
                f"rounds_per_report ({self.rounds_per_report}), so every round is reported"
            )
        return self


class ResourcesConfig(_Strict):
    """Resources of one trial, or of each worker of a data-parallel trial.

    ``gpu > 0`` moves XGBoost to ``device="cuda"`` (a data-parallel trial asks Ray Train for
    ``ScalingConfig(use_gpu=True)``). ``memory_gb`` reserves Ray's ``memory`` resource per
    worker and is the memory ``workers_per_trial: auto`` plans with (unset: the worker's share
    of the smallest node, its memory times ``cpu`` over the node's CPUs).
    """

    cpu: float = Field(default=1.0, gt=0)
    gpu: float = Field(default=0.0, ge=0)
    memory_gb: float | None = Field(default=None, gt=0)


class TrainingConfig(_Strict):
    """What to train and how to choose: task, metric, model kinds, search, resources."""

    task: Literal["classification", "regression"]
    metric: str | None = None
    models: list[ModelKind] | None = Field(
        default=None, description="default: xgboost, random_forest and the task's linear model"
    )
    search: SearchConfig = SearchConfig()
    resources_per_trial: ResourcesConfig = ResourcesConfig()
    workers_per_trial: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        default="auto",
        description=(
            "Ray Train workers per XGBoost trial, each holding its own shard of the training "
            "rows. auto: 1 when the training rows (float64, 3x for XGBoost's copies) fit in one "
            "worker's memory (resources_per_trial.memory_gb, else the worker's share of the "
            "smallest node), else as many as it takes to hold them. scikit-learn models always "
            "train on one worker: beyond one worker's memory the run is refused"
        ),
    )

    @field_validator("workers_per_trial", mode="before")
    @classmethod
    def _auto_or_count(cls, value: Any) -> Any:
        # one message instead of one per branch of the union
        if value == "auto" or (type(value) is int and value >= 1):
            return value
        raise ValueError("expected auto or a whole number of workers, 1 or more (e.g. 2)")

    @model_validator(mode="after")
    def _metric_fits_task(self) -> TrainingConfig:
        allowed = CLASSIFICATION_METRICS if self.task == "classification" else REGRESSION_METRICS
        if self.metric is None:
            object.__setattr__(
                self, "metric", "roc_auc" if self.task == "classification" else "rmse"
            )
        elif self.metric not in allowed:
            raise ValueError(
                f"metric {self.metric!r} is not a {self.task} metric; allowed: {', '.join(allowed)}"
            )
        if self.models is None:
            linear = "logistic_regression" if self.task == "classification" else "ridge"
            object.__setattr__(self, "models", ["xgboost", "random_forest", linear])
        models = self.models or []
        if not models:
            raise ValueError("models is empty: list at least one of xgboost, random_forest, ...")
        if len(set(models)) != len(models):
            raise ValueError("models lists a model twice")
        for model in models:
            task = _TASK_ONLY_MODELS.get(model)
            if task and task != self.task:
                fix = "ridge" if model == "logistic_regression" else "logistic_regression"
                raise ValueError(f"model {model!r} is for {task}; for {self.task} use {fix!r}")
        return self

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger value of ``metric`` is better (the search and gate mode)."""
        table = CLASSIFICATION_METRICS if self.task == "classification" else REGRESSION_METRICS
        return table[self.metric or ""]


class GateConfig(_Strict):
    """The promotion gate, challenger vs champion on the challenger's holdout.

    ``min_improvement``: the main metric must improve by at least this much (0: a tie passes).
    ``max_metric_drop``: no other metric may get worse by more than this (null: not checked).
    """

    min_improvement: float = Field(default=0.0, ge=0)
    max_metric_drop: float | None = Field(default=0.05, ge=0)


class AutoscalingConfig(_Strict):
    """Ray Serve autoscaling. Serve's own default max_replicas is 1, so it is set here."""

    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=2, ge=1)
    target_ongoing_requests: float = Field(default=8.0, gt=0)
    upscale_delay_s: float | None = Field(
        default=None,
        ge=0,
        description="how long the load must stay above target before a replica is added "
        "(unset: Serve's default, 30 s)",
    )
    downscale_delay_s: float | None = Field(
        default=None,
        ge=0,
        description="how long the load must stay below target before a replica is removed "
        "(unset: Serve's default, 600 s)",
    )
    look_back_period_s: float | None = Field(
        default=None,
        gt=0,
        description="the window the ongoing requests are averaged over (unset: Serve's, 30 s)",
    )

    def serve_options(self) -> dict[str, float | int]:
        """Ray Serve's ``autoscaling_config``: the fields set here (Serve's defaults for the rest)."""
        return self.model_dump(exclude_none=True)

    @model_validator(mode="after")
    def _ordered(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas is greater than max_replicas")
        return self


#: the alias a canary-first retrain moves (``monitoring.promote: canary``)
CHALLENGER = "challenger"


class CanaryConfig(_Strict):
    """A second version answering (or shadowing) a fraction of the traffic.

    ``version`` is a version (``v3``) or an alias: ``challenger`` follows the retrained model of
    a canary-first retrain, and serves as the champion until that alias exists.
    """

    version: str | None = None
    fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    shadow: bool = False


class PredictionLogConfig(_Strict):
    """Where answered predictions go: Parquet under {storage}/predictions/{name}/."""

    enabled: bool = True
    flush_rows: int = Field(default=10_000, ge=1)
    flush_s: float = Field(default=5.0, gt=0)
    max_queue_rows: int = Field(
        default=100_000, ge=1, description="rows past this are dropped and counted"
    )
    retention_days: int | None = Field(
        default=None,
        ge=1,
        description="delete the log's date=YYYY-MM-DD partitions older than this (null: keep all)",
    )
    log_ids: bool = Field(
        default=True,
        description="log the schema's id columns (role: id); false leaves them out of the log",
    )


class ServingConfig(_Strict):
    """The HTTP service on Ray Serve. Binds 127.0.0.1 unless ``host`` says otherwise."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    autoscaling: AutoscalingConfig = AutoscalingConfig()
    max_batch_size: int = Field(default=64, ge=1)
    batch_wait_timeout_s: float = Field(
        default=0.0,
        ge=0,
        description="how long a batch waits for more requests after its first; 0: it takes "
        "the requests already queued and never holds a lone one (they queue while a batch runs)",
    )
    max_ongoing_requests: int = Field(default=32, ge=1)
    replica_cpus: float = Field(
        default=0.5, gt=0, description="CPUs reserved per model replica (the ingress takes 0.25)"
    )
    max_instances: int = Field(default=1000, ge=1)
    max_body_bytes: int = Field(default=4_000_000, ge=1024)
    request_timeout_s: float = Field(default=10.0, gt=0)
    reload_poll_s: float = Field(
        default=2.0, gt=0, description="how often replicas check the alias for a new version"
    )
    api_key_env: str | None = Field(
        default="RAYMLOPS_API_KEY",
        description="the variable holding the key with every role (predict and read)",
    )
    api_keys: dict[str, list[ApiRole]] = Field(
        default_factory=dict,
        description=(
            "more keys: the variable holding each key -> its roles, `predict` (the predict "
            "route) and `read` (model status, /docs, /openapi.json)"
        ),
    )
    canary: CanaryConfig = CanaryConfig()
    prediction_log: PredictionLogConfig = PredictionLogConfig()

    @field_validator("api_keys")
    @classmethod
    def _key_variables(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for env, roles in value.items():
            if not _ENV_NAME.fullmatch(env):
                raise ValueError(  # not echoed: it may be the key itself, pasted here
                    "a name is not an environment variable name (letters, digits and _, not "
                    "starting with a digit): name the variable holding each key, never the key"
                )
            if not roles or len(set(roles)) != len(roles):
                raise ValueError(
                    f"{env}: list its roles once each, at least one of predict, read"
                )
        return value


class MonitoringConfig(_Strict):
    """Drift monitoring of served traffic and the retrain policy."""

    window_rows: int = Field(default=1000, ge=10)
    drift_share: float = Field(default=0.5, gt=0.0, le=1.0)
    consecutive_windows: int = Field(default=2, ge=1)
    cooldown_s: float = Field(default=600.0, ge=0)
    retrain_source: str | None = None

    @field_serializer("retrain_source", when_used="json")
    def _no_credentials(self, value: str | None) -> str | None:
        return None if value is None else redact_uri(value)
    report_every: int = Field(
        default=1,
        ge=1,
        description="an Evidently report (HTML + JSON) every N windows, and for every drifted one",
    )
    promote: Literal["champion", "canary"] = Field(
        default="champion",
        description=(
            "where a retrained model that passes the gate goes: straight to champion, or to the "
            "'challenger' alias that serving.canary.version: challenger sends a share of traffic to"
        ),
    )


class CardConfig(_Strict):
    """What a person reads first on every version's model card (``raymlops.registry.card``)."""

    description: str | None = None
    intended_use: str | None = None
    owners: list[str] = Field(default_factory=list)
    limitations: str | None = None


class ProjectConfig(_Strict):
    """One model's project: name, storage URI, data and schema, training, gate, serving."""

    name: str = Field(pattern=_NAME_PATTERN)
    storage: str = "./.raymlops"

    @field_serializer("storage", when_used="json")
    def _no_credentials(self, value: str) -> str:
        return redact_uri(value)  # lineage.json and other JSON dumps never hold credentials
    data: DataConfig
    training: TrainingConfig
    gate: GateConfig = GateConfig()
    serving: ServingConfig = ServingConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    card: CardConfig = CardConfig()

    @model_validator(mode="after")
    def _target_fits_task(self) -> ProjectConfig:
        spec = self.data.columns.get(self.data.target)
        if spec is None:
            return self
        if self.training.task == "regression" and spec.type not in ("float", "int"):
            raise ValueError(
                f"regression needs a numeric target; data.columns.{self.data.target} is {spec.type}"
            )
        if self.training.task == "classification" and spec.type in ("float", "datetime", "string"):
            raise ValueError(
                f"classification needs a category, int or bool target; "
                f"data.columns.{self.data.target} is {spec.type}"
            )
        return self

    @model_validator(mode="after")
    def _canary_retrains_have_a_canary(self) -> ProjectConfig:
        canary = self.serving.canary
        if self.monitoring.promote == "canary" and (
            canary.version != CHALLENGER or (canary.fraction == 0 and not canary.shadow)
        ):
            raise ValueError(
                "monitoring.promote is 'canary' but serving.canary does not follow the retrained "
                f"model: set serving.canary to {{version: {CHALLENGER}, fraction: 0.1}} "
                "(or shadow: true)"
            )
        return self


# -- loading -------------------------------------------------------------------------------------


def _is_uri(value: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", value)) or value.startswith("sklearn:")


def _resolve_path(value: str, base: Path) -> str:
    """Resolve a local path relative to the config's folder; leave URIs untouched."""
    if _is_uri(value):
        return value
    path = Path(os.path.expanduser(value))
    return str(path if path.is_absolute() else (base / path).resolve())


def _usable_field_name(name: str) -> bool:
    """True when pydantic makes ``name`` a field of a model (the request model is built from
    the columns): a leading ``_`` makes it a private attribute, ``model_config`` is taken."""
    import warnings

    from pydantic import create_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "shadows an attribute": still a field, still works
        try:
            model = create_model("ColumnNameCheck", **{name: (Any, None)})
        except Exception:  # noqa: BLE001 - any refusal by pydantic means "not usable"
            return False
    return name in model.model_fields


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors and aliases: a config needs neither, and a few KB of nested
    aliases (an "alias bomb") expand to billions of nodes (37 s of CPU, then MemoryError)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            mark = event.start_mark
            raise _YamlAliasError(
                f"line {mark.line + 1}, column {mark.column + 1}: YAML anchors and aliases "
                f"(&{event.anchor} / *{event.anchor}) are not allowed in a raymlops config; "
                "write the values out"
            )
        return super().compose_node(parent, index)


class _YamlAliasError(Exception):
    pass


def config_hash(config: ProjectConfig) -> str:
    """A stable sha256 of the config's content (key order and formatting do not matter)."""
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


#: set, it replaces the config's ``storage:`` (a URI, or a folder: made absolute)
STORAGE_ENV = "RAYMLOPS_STORAGE"


def read_yaml(path: Path) -> Any:
    """The YAML document in ``path``, read safely and without anchors or aliases.

    Raises:
        ConfigError: not valid YAML, or it holds an anchor or alias (the message says where).
    """
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader
    except _YamlAliasError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ConfigError(f"{path}: not valid YAML{line}: {exc}") from None


def load_config(path: str | os.PathLike[str]) -> ProjectConfig:
    """Read and validate a project config; local paths in it are resolved against its folder.

    ``RAYMLOPS_STORAGE``, when set, replaces ``storage:`` (``raymlops job submit`` sets it for
    a relative registry folder on a cluster on this machine).

    Raises:
        ConfigError: the file is missing, is not YAML, or does not validate. The message names
            each bad key path, the value found and what is allowed.
    """
    config_path = Path(path)
    if not config_path.is_file():
        hint = "create one with `raymlops init DIR`" if not config_path.exists() else "not a file"
        raise ConfigError(f"config file not found: {config_path} ({hint})")
    raw = read_yaml(config_path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{config_path}: expected a mapping of keys (name, data, training, ...)")
    try:
        config = ProjectConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source=str(config_path))) from None
    base = config_path.resolve().parent
    storage = _resolve_path(config.storage, base)
    override = os.environ.get(STORAGE_ENV, "").strip()
    if override:
        # a job on a cluster on this machine gets the absolute registry folder this way (a
        # relative `storage:` would point into its temporary copy of the working dir)
        storage = override if "://" in override else str(Path(override).expanduser().resolve())
    data = config.data.model_copy(update={"source": _resolve_path(config.data.source, base)})
    monitoring = config.monitoring
    if monitoring.retrain_source:
        monitoring = monitoring.model_copy(
            update={"retrain_source": _resolve_path(monitoring.retrain_source, base)}
        )
    return config.model_copy(
        update={
            "storage": storage,
            "data": data,
            "monitoring": monitoring,
        }
    )


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The config model that owns the key at ``loc`` (to list allowed keys for a typo)."""
    model: type[BaseModel] | None = ProjectConfig
    for part in loc[:-1]:
        if model is None:
            return None
        field = model.model_fields.get(str(part))
        if field is None:
            # a free-form mapping level (e.g. data.columns.<name>): the value type is ColumnSpec
            model = ColumnSpec if model is DataConfig or model is ColumnSpec else None
            continue
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        elif str(part) == "columns":
            model = DataConfig  # the next part is a column name
        else:
            return None
    return model


def format_validation_error(exc: ValidationError, *, source: str = "config") -> str:
    """Turn pydantic's errors into one line per key: path, bad value, what is allowed."""
    lines = [f"{source}: {exc.error_count()} problem(s)"]
    for error in exc.errors():
        loc = tuple(error["loc"])
        path = ".".join(str(p) for p in loc) or "(top level)"
        kind = error["type"]
        if kind == "extra_forbidden":
            model = _model_at(loc)
            allowed = sorted(model.model_fields) if model else []
            guess = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f" Did you mean {guess[0]!r}?" if guess else ""
            lines.append(f"  {path}: unknown key.{hint} Allowed here: {', '.join(allowed)}")
            continue
        if kind == "missing":
            lines.append(f"  {path}: required key is missing; add it")
            continue
        value = error.get("input")
        shown = repr(redact_uri(value) if isinstance(value, str) else value)
        shown = shown if not isinstance(value, dict) else "{...}"
        message = error["msg"].removeprefix("Value error, ")
        expected = error.get("ctx", {}).get("expected")
        allowed = f" (allowed: {expected})" if expected and expected not in message else ""
        if kind == "literal_error" and isinstance(value, str) and expected:
            options = re.findall(r"'([^']*)'", expected)
            guess = difflib.get_close_matches(value, options, n=1)
            allowed += f" Did you mean {guess[0]!r}?" if guess else ""
        lines.append(f"  {path}: got {shown}: {message}{allowed}")
    return "\n".join(lines)
