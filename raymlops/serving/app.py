"""The Ray Serve application: one deployment that is the FastAPI ingress and holds the model.

::

    HTTP ─► Serve proxy ─► "model" replica: FastAPI app of raymlops.serving.api
                              ├─ decode + check (the schema's contract)
                              ├─ @serve.batch, in process (no handle hop)
                              └─ Predictor (registry alias, sha256-verified files)
                           ─► "canary" deployment, through a DeploymentHandle (only with a canary)

Each replica decodes the request with the schema's contract, batches the checked rows with the
other requests waiting in the same replica (``max_batch_size``; ``batch_wait_timeout_s``, 0 by
default: a batch takes what is queued and a lone request never waits), and predicts with the
version it holds. The deployment autoscales (``serving.autoscaling``), and a replica answers
503 with ``Retry-After`` when more predictions are in flight than it admits. A canary (or
shadow) version runs as a second deployment behind a handle.

``build_app`` is the typed app builder for ``serve run`` / ``serve deploy``::

    serve run raymlops.serving.app:build_app config=path/to/raymlops.yaml

Example:
    >>> serve.run(build_app({"config": "raymlops.yaml"}), name="churn")  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import logging
import os
import sys
import threading
import uuid
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict
from ray import serve
from ray.serve.handle import DeploymentHandle

from raymlops.config import CHALLENGER, ProjectConfig, load_config
from raymlops.contract import Columns, RequestRejected
from raymlops.errors import ConfigError, RegistryError
from raymlops.predictor import load_predictor, read_reference
from raymlops.registry import Registry
from raymlops.registry.bundle import BundleReader
from raymlops.registry.compat import input_schema_change
from raymlops.registry.probe import ProbeError, probe_version
from raymlops.serving.api import (
    QUEUE_FACTOR,
    AccessRecord,
    PredictOutput,
    ServiceOverloaded,
    SplitBackend,
    admitted_predictions,
    attach_backend,
    create_app,
    log_access,
    predict_columns,
    prediction_output,
)
from raymlops.serving.binding import resolve_api_key  # where Serve really binds
from raymlops.serving.log_writer import ActorSink, log_sinks
from raymlops.serving.prediction_log import PredictionLog, ServedBatch
from raymlops.serving.push import AliasListener
from raymlops.storage import Storage

_log = logging.getLogger("raymlops.serving")
#: requests are short: a replica being stopped waits at most this long for those in flight
_GRACEFUL_SHUTDOWN_S = 5.0

__all__ = [
    "BuildArgs",
    "ModelDeployment",
    "ModelServer",
    "ReplicaBackend",
    "admitted_predictions",
    "build_app",
    "build_application",
    "resolve_api_key",
]


class BuildArgs(BaseModel):
    """Arguments of :func:`build_app` (``serve run ... config=C alias=champion``)."""

    model_config = ConfigDict(extra="forbid")

    config: str
    alias: str = "champion"


class ModelServer:
    """Holds one verified registry version, answers batched predictions, and follows the alias.

    The champion's replicas are this class with the FastAPI app on top (:func:`build_application`);
    a canary, and a deployment reached only by a handle, is :data:`ModelDeployment`.

    Zero-downtime swap: a watcher thread polls the alias every ``reload_poll_s``, and checks at
    once when a promotion is pushed (:mod:`raymlops.serving.push`) or ``reload()`` is called.
    When it moves, the new version is loaded and verified in the background while the old one
    keeps answering, then ``self.predictor`` is replaced in one assignment.
    A batch takes its predictor once, so requests in flight finish on the version they started
    with, and no answer comes from a half-loaded model. A version that fails to load is logged
    and the old one keeps serving. Rollback is the same move backwards.
    """

    def __init__(
        self,
        storage: str,
        name: str,
        alias: str,
        max_batch_size: int,
        batch_wait_timeout_s: float,
        reload_poll_s: float = 2.0,
        prediction_log: dict[str, Any] | None = None,
        fallback: str | None = None,
        served_schema: dict[str, Any] | None = None,
    ) -> None:
        self._registry = Registry(Storage.from_uri(storage, create=False), name)
        self._fallback = fallback
        # the schema.json of the request model the app was deployed with: a version that takes
        # other requests is never loaded here (also not by a replica restarted after the move)
        self._served_schema = served_schema
        self._alias = alias
        self._refused: dict[str, str] = {}  # version -> why it cannot be served (immutable)
        self._degraded: str | None = None
        self._gauge: Any = None
        self.predictor = self._load_first_servable()
        self._set_degraded(self._degraded)
        self._prediction_log: PredictionLog | None = None
        if prediction_log and prediction_log.get("enabled", True):
            # the Parquet files and the monitor's feed are written by an actor beside the
            # replica, which only joins each tick's rows in numpy (raymlops.serving.log_writer)
            sinks = functools.partial(
                log_sinks,
                storage,
                name,
                prediction_log,
                self.predictor.schema.id_columns,  # left out when log_ids is false
            )
            # drained on this replica's event loop between requests, not by a thread of its
            # own (see PredictionLog): armed by the first logged batch (_log_batch)
            self._prediction_log = PredictionLog(
                [ActorSink(sinks)],
                max_queue_rows=prediction_log["max_queue_rows"],
                background=False,
            )
        self._log_tick: asyncio.TimerHandle | None = None
        self.predict_batch.set_max_batch_size(max_batch_size)
        self.predict_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._poll_s = reload_poll_s
        self._watcher = threading.Thread(
            target=self._watch, name="raymlops-alias-watch", daemon=True
        )
        self._watcher.start()
        self._listener = AliasListener(name, self._wake.set, retry_s=max(reload_poll_s, 1.0))

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._poll_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            self._follow_alias()

    def _target(self) -> str:
        """The version to serve: the alias's, or the fallback's while the alias does not exist."""
        try:
            return self._registry.resolve(self._alias)
        except RegistryError:
            if self._fallback is None:
                raise
            return self._registry.resolve(self._fallback)

    def _load_checked(self, version: str) -> Any:
        """Load ``version`` here only after it loaded and scored in a child process: a model
        that crashes its loader must not take this replica down (raymlops.registry.probe)."""
        if version in self._refused:
            raise ProbeError(self._refused[version])
        served = self._served_schema
        if served is None and getattr(self, "predictor", None) is not None:
            served = self.predictor.schema.to_dict()
        change = None if served is None else input_schema_change(
            served, BundleReader(self._registry, version).schema()
        )
        if change is not None:
            # every request would be a 422 (or reach a model that cannot read it); the registry
            # refuses such a move unless told to, and then serving must be deployed again
            self._refused[version] = (
                f"its input schema differs from the deployed request model's ({change}); "
                "deploy serving again to serve it"
            )
            raise ProbeError(self._refused[version])
        try:
            probe_version(self._registry, version)
            return load_predictor(self._registry, version)  # verified, complete
        except ProbeError as exc:
            self._refused[version] = str(exc)
            raise

    def _load_first_servable(self) -> Any:
        """The alias's version; if it cannot be served, the newest earlier one that can,
        from the alias's history in the audit log (reported by :meth:`status`)."""
        target = self._target()
        try:
            return self._load_checked(target)
        except Exception as exc:
            earlier = [v for v in reversed(self._registry.history(self._alias)) if v != target]
            for version in earlier:
                try:
                    loaded = self._load_checked(version)
                except Exception:  # noqa: S112 - try the one before
                    continue
                self._degraded = (  # the gauge is set once the constructor has a predictor
                    f"{self._alias} is {target}, which cannot be served ({exc}); serving "
                    f"{version}, its previous version in the audit log. Fix: roll back or "
                    "promote a good version"
                )
                _log.error("%s", self._degraded)
                return loaded
            raise

    def _follow_alias(self) -> None:
        try:
            target = self._target()
            if target == self.predictor.version:
                if self._degraded is not None:
                    self._set_degraded(None)  # the alias came back to the version served
                return
            if target in self._refused:
                return  # a refused version stays refused (versions are immutable)
            loaded = self._load_checked(target)  # in a child first, then here, then swapped
        except Exception as exc:  # keep serving the loaded version, whatever went wrong
            if isinstance(exc, ProbeError):
                self._set_degraded(
                    f"{self._alias} is {target}, which cannot be served ({exc}); still serving "
                    f"{self.predictor.version}"
                )
            _log.warning("alias %r: staying on %s: %s", self._alias, self.predictor.version, exc)
            return
        previous, self.predictor = self.predictor.version, loaded
        self._set_degraded(None)
        _log.info("alias %r moved: now serving %s (was %s)", self._alias, loaded.version, previous)

    def _set_degraded(self, why: str | None) -> None:
        """Say whether this replica serves another version than its alias names, in
        :meth:`status` and as the gauge ``raymlops_degraded`` (1: degraded, 0: not)."""
        self._degraded = why
        try:
            if self._gauge is None:
                from ray.util import metrics

                self._gauge = metrics.Gauge(
                    "raymlops_degraded",
                    "1 while a replica serves another version than its alias names",
                    tag_keys=("model", "alias"),
                )
            tags = {"model": self._registry.name, "alias": self._alias}
            self._gauge.set(0 if why is None else 1, tags=tags)
        except Exception:  # observability must never stop a replica
            _log.debug("cannot set the degraded gauge", exc_info=True)

    def reload(self) -> str:
        """Check the alias now (the push after a promotion); returns the version served."""
        self._follow_alias()
        return self.predictor.version

    def close(self) -> None:
        """Stop following the alias and flush the prediction log (the replica is stopping)."""
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
            self._wake.set()
        listener = getattr(self, "_listener", None)
        if listener is not None:
            listener.close()
        log = getattr(self, "_prediction_log", None)
        if log is not None:
            log.close()

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005)
    async def predict_batch(self, requests: list[tuple[Columns, str | None]]) -> list[dict[str, Any]]:
        # rows arrive decoded and checked by the schema's contract at the ingress: they are not
        # validated again here (unless a swap changed the schema, see Predictor.predict_columns)
        predictor = self.predictor  # the whole batch is answered by one version
        batch = Columns.concat([rows for rows, _ in requests])
        try:
            prediction = predictor.predict_columns(batch)
        except RequestRejected:
            # one bad request must not fail the others batched with it
            return [self._one(predictor, rows, request_id) for rows, request_id in requests]
        combined = prediction_output(predictor, prediction)
        # the log takes the probabilities as numpy: the lists are the answers' (JSON) form
        self._log_batch(requests, combined, batch, prediction.probabilities)
        answers, start = [], 0
        for rows, _ in requests:
            end = start + len(rows)
            probabilities = combined.probabilities
            answers.append(
                {
                    "predictions": combined.predictions[start:end],
                    "probabilities": None if probabilities is None else probabilities[start:end],
                    "classes": combined.classes,
                    "model_version": combined.model_version,
                }
            )
            start = end
        return answers

    def _log_batch(
        self,
        requests: list[tuple[Columns, str | None]],
        output: PredictOutput,
        batch: Columns,
        probabilities: np.ndarray | None = None,
    ) -> None:
        if self._prediction_log is None:
            return
        self._prediction_log.offer(
            ServedBatch(
                # the columns the batch was answered from: an Arrow table is built in the background
                records=batch,
                predictions=output.predictions,
                probabilities=output.probabilities if probabilities is None else probabilities,
                classes=output.classes,
                model_version=output.model_version,
                request_ids=[request_id for _, request_id in requests],
                logged_at=dt.datetime.now(dt.timezone.utc),
                request_rows=[len(rows) for rows, _ in requests],
            )
        )
        if self._log_tick is None:
            self._drain_log_later()

    def _drain_log_later(self) -> None:
        log = self._prediction_log
        if log is not None and not self._stop.is_set():
            loop = asyncio.get_running_loop()
            self._log_tick = loop.call_later(log.tick_s, self._drain_log)

    def _drain_log(self) -> None:
        """One tick of the prediction log, on the event loop: the joined rows go to the writer
        actor (a few ms per tick at 60,000 rows/s), then the next tick is armed."""
        try:
            if self._prediction_log is not None and not self._stop.is_set():
                self._prediction_log.drain()
        except Exception:  # the log must keep ticking: an error here is logged, not fatal
            _log.exception("prediction log: a tick failed")
        finally:
            self._drain_log_later()

    def _one(self, predictor: Any, rows: Columns, request_id: str | None) -> dict[str, Any]:
        try:
            output = predict_columns(predictor, rows)
        except RequestRejected as exc:
            return {"error": exc.message, "status": exc.status, "details": exc.details}
        self._log_batch([(rows, request_id)], output, rows)
        return output.__dict__

    async def predict(self, rows: Columns, request_id: str | None = None) -> dict[str, Any]:
        return await self.predict_batch((rows, request_id))

    def status(self) -> dict[str, Any]:
        """Readiness, the version served, the prediction log's counts and ``degraded``."""
        log = self._prediction_log.stats().__dict__ if self._prediction_log is not None else None
        return {
            "ready": True,
            "model_version": self.predictor.version,
            "prediction_log": log,
            "degraded": self._degraded,  # the alias names a version this replica refused
        }


class _HandleServedModel(ModelServer):
    def __del__(self) -> None:
        self.close()


#: a model version reached through a ``DeploymentHandle`` (``predict``, ``status``, ``reload``):
#: the canary, and any caller that is not the HTTP app
ModelDeployment = serve.deployment(name="model")(_HandleServedModel)


class ServeMetrics:
    """The observer of a Serve ingress: the access log line, and per-version Ray metrics
    (``ray.util.metrics``, exported on Ray's Prometheus endpoint as ``ray_raymlops_*``).
    The metrics are created in the replica, on first use."""

    _LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0]

    def __init__(self, model: str) -> None:
        self.model = model
        self._metrics: tuple[Any, ...] | None = None

    def _instruments(self) -> tuple[Any, ...]:
        if self._metrics is None:
            from ray.util import metrics

            self._metrics = (
                metrics.Counter(
                    "raymlops_requests",
                    "answered requests",
                    tag_keys=("model", "version", "status"),
                ),
                metrics.Counter(
                    "raymlops_request_errors",
                    "requests answered 4xx/5xx",
                    tag_keys=("model", "version", "status"),
                ),
                metrics.Histogram(
                    "raymlops_request_latency_s",
                    "request latency in seconds",
                    boundaries=self._LATENCY_BUCKETS,
                    tag_keys=("model", "version"),
                ),
                metrics.Counter(
                    "raymlops_rows_predicted", "rows predicted", tag_keys=("model", "version")
                ),
            )
        return self._metrics

    def __call__(self, record: AccessRecord) -> None:
        log_access(record)
        requests, errors, latency, rows = self._instruments()
        tags = {"model": self.model, "version": record.model_version or "none"}
        requests.inc(tags={**tags, "status": str(record.status)})
        if record.status >= 400:
            errors.inc(tags={**tags, "status": str(record.status)})
        latency.observe(record.latency_s, tags=tags)
        if record.rows and record.status < 400:  # rows of refused requests were not predicted
            rows.inc(record.rows, tags=tags)


def write_access_log_to_stderr() -> None:
    """Send ``raymlops.access`` lines to the process's own stderr (the replica's worker log,
    which Ray also prints on the driver's console).

    Called in the ingress replica. Serve's throughput-optimized mode, raymlops's default,
    buffers its replica logger in memory (1000 records) and redirects ``sys.stderr`` into it,
    so an access line logged the usual way was written nowhere.
    """
    logger = logging.getLogger("raymlops.access")
    if any(getattr(h, "raymlops_access", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.__stderr__)
    handler.setFormatter(logging.Formatter("%(asctime)s raymlops.access %(message)s"))
    handler.raymlops_access = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


class HandleBackend:
    """The ingress's backend: calls the model deployment through its handle."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self.handle = handle

    async def predict(self, records: Columns, request_id: str | None = None) -> PredictOutput:
        from ray.exceptions import RayActorError
        from ray.serve.exceptions import BackPressureError

        try:
            try:
                answer = await self.handle.predict.remote(records, request_id)
            except RayActorError:
                # the replica died under this request (a node lost, a kill): once more, on another
                answer = await self.handle.predict.remote(records, request_id)
        except BackPressureError as exc:
            raise ServiceOverloaded(str(exc)) from None
        if "error" in answer:
            raise RequestRejected(answer["status"], answer["error"], answer["details"])
        return PredictOutput(**answer)

    async def status(self) -> dict[str, Any]:
        return await self.handle.status.remote()


class ReplicaBackend:
    """The champion's backend inside a replica: the replica's own batched predictor, no hop.

    The app in front admits at most :func:`~raymlops.serving.api.admitted_predictions` at
    once and answers the next 503 + Retry-After, so nothing queues here without bound.
    """

    def __init__(self, server: ModelServer) -> None:
        self.server = server

    async def predict(self, records: Columns, request_id: str | None = None) -> PredictOutput:
        answer = await self.server.predict(records, request_id)
        if "error" in answer:
            raise RequestRejected(answer["status"], answer["error"], answer["details"])
        return PredictOutput(**answer)

    async def status(self) -> dict[str, Any]:
        return self.server.status()


def _replica_capacity(serving: Any) -> int:
    """Requests Serve hands one replica at once: twice what it admits to predict.

    The 503 comes from the replica's app (counted from arrival), which answers it at once. With no
    more slots than it admits, the excess would wait in Serve's proxy until a slot frees: a slow
    answer instead of a quick 503, and no room for health and status requests.
    """
    return 2 * admitted_predictions(serving)


def _replica_queue(serving: Any) -> int:
    """Requests that may wait in Serve for one of a replica's slots (``max_queued_requests``).

    Behind HAProxy the replica's own HTTP server queues them (Ray 2.60's direct ingress), and
    without a bound a flood would queue there without end. The app frees a slot at once for
    every request beyond what it admits, so the queue drains fast: ten times the slots is
    reached only by a flood, and then Serve answers 503 with Retry-After itself
    (:data:`_BACKPRESSURE`, a plain-text body).
    """
    return 10 * _replica_capacity(serving)


#: how Serve answers beyond :func:`_replica_queue`: like the app's overload answer
_BACKPRESSURE = {"status_code": 503, "retry_after_s": 1}


def build_application(config: ProjectConfig, *, alias: str = "champion") -> serve.Application:
    """The Serve application of ``config``: the model deployment with its FastAPI app (and a
    canary deployment behind a handle, when one is configured), bound and ready to run."""
    serving = config.serving
    api_key = resolve_api_key(config)
    registry = Registry(Storage.from_uri(config.storage, create=False), config.name)
    schema = load_predictor(registry, alias).schema  # verifies the version before anything runs
    served_schema = schema.to_dict()  # the request model's: replicas serve no other
    reference = read_reference(registry, alias)
    shown = [c for c in schema.input_columns if c in reference.columns]
    # real rows for /docs ("Try it out"); create_app keeps those that pass the schema
    examples = json.loads(reference[shown].head(3).to_json(orient="records", date_format="iso"))
    backend_key = f"{config.name}-{uuid.uuid4().hex}"
    observer = ServeMetrics(config.name)
    key_env, key_required = serving.api_key_env, api_key is not None

    def fastapi_app() -> Any:
        # built in the replica, with the key read from the replica's own environment: the
        # application shipped to the cluster holds the variable's name, never the key
        key = os.environ.get(key_env) if key_env else None
        if key_required and not key:
            raise ConfigError(
                f"the API key is not set in this Serve replica's environment ({key_env}); "
                "set it on every node (Kubernetes Secret, launcher env), then deploy again"
            )
        return create_app(
            name=config.name,
            schema=schema,
            serving=serving,
            api_key=key or None,
            backend_key=backend_key,
            observer=observer,
            echo_request_id=False,
            examples=examples,
        )

    autoscaling = serving.autoscaling.serve_options()
    model_args = (
        config.storage,
        config.name,
        alias,
        serving.max_batch_size,
        serving.batch_wait_timeout_s,
        serving.reload_poll_s,
        serving.prediction_log.model_dump(),
    )

    @serve.deployment(
        name="model",
        autoscaling_config={
            **autoscaling,
            "initial_replicas": max(1, autoscaling["min_replicas"]),
        },
        max_ongoing_requests=_replica_capacity(serving),
        max_queued_requests=_replica_queue(serving),
        backpressure_config=_BACKPRESSURE,
        ray_actor_options={"num_cpus": serving.replica_cpus},
        graceful_shutdown_timeout_s=_GRACEFUL_SHUTDOWN_S,
        graceful_shutdown_wait_loop_s=0.5,
    )
    @serve.ingress(fastapi_app)
    class Server(ModelServer):
        """The HTTP app and the champion in one replica: decode, batch and predict in process."""

        def __init__(self, canary: DeploymentHandle | None = None) -> None:
            super().__init__(*model_args, served_schema=served_schema)
            write_access_log_to_stderr()
            backend: Any = ReplicaBackend(self)
            if canary is not None:
                split = serving.canary
                backend = SplitBackend(
                    backend, HandleBackend(canary), fraction=split.fraction, shadow=split.shadow
                )
            attach_backend(backend_key, backend)

        async def __del__(self) -> None:
            self.close()
            await super().__del__()  # Serve's ASGI wrapper: the app's lifespan shutdown

    canary = serving.canary
    if canary.version is None:
        return Server.bind()
    if canary.fraction == 0 and not canary.shadow:
        raise ConfigError(
            "serving.canary.version is set but fraction is 0 and shadow is false: set one of them"
        )
    # the canary must verify too, before anything runs; the challenger alias of a canary-first
    # retrain may not exist yet, and until it does the canary serves the champion
    fallback = alias if canary.version == CHALLENGER else None
    if fallback is None or CHALLENGER in registry.aliases():
        load_predictor(registry, canary.version)
    one_replica = {
        **autoscaling,
        "min_replicas": 1,
        "max_replicas": max(1, autoscaling["min_replicas"]),
    }
    canary_deployment = ModelDeployment.options(
        name="canary",
        autoscaling_config={**one_replica, "initial_replicas": 1},
        max_ongoing_requests=serving.max_ongoing_requests,
        max_queued_requests=serving.max_ongoing_requests * QUEUE_FACTOR,
        ray_actor_options={"num_cpus": serving.replica_cpus},
        graceful_shutdown_timeout_s=_GRACEFUL_SHUTDOWN_S,
        graceful_shutdown_wait_loop_s=0.5,
    ).bind(*model_args[:2], canary.version, *model_args[3:], fallback, served_schema)
    return Server.bind(canary_deployment)


def build_app(args: dict[str, Any]) -> serve.Application:
    """Typed app builder for ``serve run raymlops.serving.app:build_app config=C``."""
    parsed = BuildArgs.model_validate(args)
    return build_application(load_config(parsed.config), alias=parsed.alias)
