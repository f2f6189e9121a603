"""The prediction HTTP API as a FastAPI app (KServe V1 shapes), testable without Ray.

:func:`create_app` builds the app from the schema (so ``/docs`` shows every column with its
type, range and categories) and a :class:`Backend` that answers predictions: in Ray Serve a
handle to the model deployment (:mod:`raymlops.serving.app`), in tests an in-process
:class:`LocalBackend`.

Routes::

    POST /v1/models/{name}:predict   {"instances": [{...}, ...]}
         -> {"predictions": [...], "probabilities": [[...]], "classes": [...], "model_version": "v3"}
    GET  /v1/models/{name}           -> {"name", "ready", "model_version", "canary", "degraded"}
    GET  /healthz                    alive
    GET  /readyz                     a model is loaded (503 otherwise)
    GET  /docs, /redoc, /openapi.json   the request model from the schema

With keys (``serving.api_key_env``, ``serving.api_keys``) every route but ``/``, ``/healthz``
and ``/readyz`` wants one: a key with the ``predict`` role for the predict route, with ``read``
for the others (docs included); a key without the role gets 403.

Bad input never gets a 5xx: malformed JSON 400, a key that is missing or wrong 401, a key
without the route's role 403, an unknown
model 404, a body over ``max_body_bytes`` 413, a content type other than JSON 415, and rows that
break the schema 422. Every error body is ``{"error": {"code", "message", "details": [{"row",
"field", "message"}]}}``.

Example:
    >>> app = create_app(name="churn", schema=schema, serving=ServingConfig(),
    ...                  backend=LocalBackend(predictor))  # doctest: +SKIP
    >>> TestClient(app).post("/v1/models/churn:predict", json={"instances": [row]})  # doctest: +SKIP
"""

# no `from __future__ import annotations`: FastAPI must see the request model built at runtime
import asyncio
import hashlib
import hmac
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
import pandas as pd
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from raymlops.config import ServingConfig
from raymlops.contract import Columns, RequestContract, RequestRejected, report_details
from raymlops.errors import ConfigError, DataValidationError
from raymlops.predictor import Prediction, Predictor
from raymlops.schema import Schema

__all__ = [
    "AccessRecord",
    "Backend",
    "ErrorResponse",
    "LocalBackend",
    "PredictOutput",
    "QUEUE_FACTOR",
    "ServiceOverloaded",
    "SplitBackend",
    "admitted_predictions",
    "api_keys_from_env",
    "create_app",
    "log_access",
    "predict_columns",
    "predict_frame",
    "predict_records",
    "prediction_output",
    "records_frame",
]



@dataclass(frozen=True)
class PredictOutput:
    """What a backend answers for a list of rows."""

    predictions: list[Any]
    probabilities: list[list[float]] | None
    classes: list[Any] | None
    model_version: str


class Backend(Protocol):
    """Answers predictions for checked rows (:class:`~raymlops.contract.Columns`); reports
    which version it serves."""

    async def predict(self, rows: Columns, request_id: str | None = None) -> PredictOutput: ...

    async def status(self) -> dict[str, Any]: ...


def predict_columns(predictor: Predictor, columns: Columns) -> PredictOutput:
    """Checked columns -> the predictor's answer (the online path: numpy, no pandas)."""
    return prediction_output(predictor, predictor.predict_columns(columns))


def predict_records(predictor: Predictor, records: list[dict[str, Any]]) -> PredictOutput:
    """Rows (as dicts) -> the predictor's answer, checked by the version's own contract.

    Raises:
        DataValidationError: a row breaks the schema (the report names field and row).
    """
    columns, report = predictor.contract.from_records(records)
    if not report.ok:
        raise DataValidationError(report.render(), report=report)
    return predict_columns(predictor, columns)


def records_frame(predictor: Predictor, records: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows (as dicts) as a frame of the version's input columns (a missing one is all null)."""
    return pd.DataFrame.from_records(records, columns=predictor.schema.input_columns)


def predict_frame(predictor: Predictor, frame: pd.DataFrame) -> PredictOutput:
    """Raw input rows -> the predictor's answer, through the version's pandas validator (the
    path of data files; the online path is :func:`predict_columns`)."""
    return prediction_output(predictor, predictor.predict(predictor.validate(frame)))


def prediction_output(predictor: Predictor, prediction: Prediction) -> PredictOutput:
    """The JSON-ready answer of ``prediction`` (plain lists; its numpy arrays stay with it)."""
    probabilities = None if prediction.probabilities is None else prediction.probabilities.tolist()
    classes = (
        list(predictor.pipeline.target.classes) if prediction.probabilities is not None else None
    )
    return PredictOutput(_plain(prediction.labels), probabilities, classes, predictor.version)


def _plain(values: list[Any]) -> list[Any]:
    return [v.item() if hasattr(v, "item") else v for v in values]


class LocalBackend:
    """A backend holding a loaded version in-process (tests, and single-process serving)."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor

    async def predict(self, rows: Columns, request_id: str | None = None) -> PredictOutput:
        return predict_columns(self.predictor, rows)

    async def status(self) -> dict[str, Any]:
        return {"ready": True, "model_version": self.predictor.version}


class SplitBackend:
    """Canary and shadow traffic over two backends.

    ``shadow=False``: a ``fraction`` of requests is answered by the canary, chosen by a hash of
    the request id, so a client that sends the same ``X-Request-Id`` always gets the same
    version. ``shadow=True``: the champion answers every request and the canary gets a copy in
    the background (its answer is only logged and counted). Each backend logs its own
    predictions with its version, so the two can be compared.
    """

    def __init__(
        self, champion: Backend, canary: Backend, *, fraction: float, shadow: bool
    ) -> None:
        self.champion = champion
        self.canary = canary
        self.fraction = fraction
        self.shadow = shadow
        self._shadow_tasks: set[asyncio.Task[Any]] = set()
        self.shadow_failures = 0

    def routes_to_canary(self, request_id: str | None) -> bool:
        if self.shadow or not request_id:
            return False
        digest = hashlib.sha256(request_id.encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.fraction

    async def predict(self, records: Columns, request_id: str | None = None) -> PredictOutput:
        if self.shadow:
            task = asyncio.create_task(self._shadow(records, request_id))
            self._shadow_tasks.add(task)
            task.add_done_callback(self._shadow_tasks.discard)
            return await self.champion.predict(records, request_id)
        chosen = self.canary if self.routes_to_canary(request_id) else self.champion
        return await chosen.predict(records, request_id)

    async def _shadow(self, records: Columns, request_id: str | None) -> None:
        try:
            await self.canary.predict(records, request_id)
        except Exception:  # the caller already has the champion's answer
            self.shadow_failures += 1
            _access_log.warning(
                "shadow prediction failed for request %s", request_id, exc_info=True
            )

    async def status(self) -> dict[str, Any]:
        champion, canary = await asyncio.gather(self.champion.status(), self.canary.status())
        return {
            **champion,
            "canary_version": canary.get("model_version"),
            "canary_ready": canary.get("ready"),
        }


def _error(
    code: int, message: str, details: list[dict[str, Any]] | None = None, **headers: str
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details or []}}
    return JSONResponse(body, status_code=code, headers=headers or None)


#: backends attached in this process, by key: a Serve replica deserialises its own copy of the
#: FastAPI app, so the replica's constructor attaches the backend here rather than on the app
_ATTACHED: dict[str, Backend] = {}


def attach_backend(key: str, backend: Backend) -> None:
    """Make ``backend`` answer for the apps created with ``backend_key=key`` in this process."""
    _ATTACHED[key] = backend


def attached_backend(key: str | None) -> Backend | None:
    # a module-level function: cloudpickle sends it by reference, so a deserialised app reads
    # this process's registry (a closure would carry a copy of the dict)
    return _ATTACHED.get(key) if key else None


class ServiceOverloaded(Exception):
    """Raised by a backend whose queue is full: the client gets 503 with Retry-After."""


#: an app admits this many times ``max_ongoing_requests`` predictions waiting, then says 503
QUEUE_FACTOR = 4


def admitted_predictions(serving: ServingConfig) -> int:
    """Predictions one app (one Serve replica) holds at once: ``max_ongoing_requests`` running
    in batches plus ``QUEUE_FACTOR`` times as many waiting; the next is answered 503 at once."""
    return serving.max_ongoing_requests * (1 + QUEUE_FACTOR)


@dataclass
class _Admission:
    limit: int
    in_flight: int = 0


class _Unauthorized(Exception):
    pass


class _Forbidden(Exception):
    pass


class _NotReady(Exception):
    pass


class _UnknownModel(Exception):
    pass


@dataclass(frozen=True)
class AccessRecord:
    """One answered request, for the access log and metrics."""

    request_id: str
    method: str
    path: str
    status: int
    latency_s: float
    model_version: str | None
    rows: int | None

    def line(self) -> str:
        # the path comes from the client, percent-decoded: escaped, it cannot end the line
        # ("%0A" forged a log line) or add a field (a space)
        return (
            f"request_id={_escape(self.request_id)} {_escape(self.method)} {_escape(self.path)} "
            f"status={self.status} "
            f"version={self.model_version or '-'} rows={self.rows if self.rows is not None else '-'} "
            f"latency_ms={self.latency_s * 1000:.1f}"
        )


def _escape(text: str) -> str:
    """``text`` as one token on one line: every character but printable ASCII (and the
    backslash) written as ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``."""
    return "".join(c if "!" <= c <= "~" and c != "\\" else _escaped(c) for c in text)


def _escaped(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


#: a request id a client may choose; any other is replaced by a made one
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def log_access(record: AccessRecord) -> None:
    """The default observer: one access-log line per request (logger ``raymlops.access``)."""
    _access_log.info(record.line())


_access_log = logging.getLogger("raymlops.access")


class RequestGuard:
    """ASGI middleware around the app.

    Before anything parses the body it refuses a body over the limit (413, also when it arrives
    chunked without Content-Length) and a predict request whose content type is not JSON (415).
    Every request gets an id (``X-Request-Id``, taken from the request or made), echoed in the
    response; when the answer is sent, ``observer`` receives an :class:`AccessRecord`.
    """

    def __init__(
        self,
        app: Any,
        max_body_bytes: int,
        observer: Callable[[AccessRecord], None] | None = None,
        echo_request_id: bool = True,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.observer = observer or log_access
        self.echo_request_id = echo_request_id

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
        }
        given = headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = {"code": 500}
        refused = False

        async def tagged_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            if message["type"] == "http.response.start" and self.echo_request_id:
                message = {
                    **message,
                    "headers": [
                        *message.get("headers", []),
                        (b"x-request-id", request_id.encode()),
                    ],
                }
            await send(message)

        try:
            limit = self.max_body_bytes
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > limit:
                message = f"request body is {length} bytes; the limit is {limit}"
                await _error(413, message)(scope, receive, tagged_send)
                return
            if scope["method"] == "POST" and scope["path"].endswith(":predict"):
                kind = headers.get("content-type", "").split(";")[0].strip().lower()
                if kind != "application/json":
                    message = f"content type must be application/json, not {kind or 'missing'!r}"
                    await _error(415, message)(scope, receive, tagged_send)
                    return
            received = 0

            async def limited_receive() -> dict[str, Any]:
                # Answer 413 as soon as the body passes the limit, then tell the app the client
                # left: whatever it answers after that is dropped (FastAPI turns a failed body
                # read into 400).
                nonlocal received, refused
                if refused:
                    return {"type": "http.disconnect"}
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        refused = True
                        response = _error(413, f"request body is over the limit of {limit} bytes")
                        await response(scope, receive, tagged_send)
                        return {"type": "http.disconnect"}
                return message

            async def guarded_send(message: dict[str, Any]) -> None:
                if not refused:
                    await tagged_send(message)

            await self.app(scope, limited_receive, guarded_send)
        finally:
            record = AccessRecord(
                request_id,
                scope["method"],
                scope["path"],
                status["code"],
                time.perf_counter() - started,
                state.get("model_version"),
                state.get("rows"),
            )
            try:
                self.observer(record)
            except Exception:  # observability must never fail a request
                _access_log.exception("observer failed")


def _details(exc: RequestValidationError) -> tuple[int, str, list[dict[str, Any]]]:
    """pydantic errors -> (status, message, [{row, field, message}])."""
    details = []
    for error in exc.errors():
        loc = [p for p in error.get("loc", ()) if p != "body"]
        if error.get("type") == "json_invalid":
            context = error.get("ctx", {}).get("error", "")
            return 400, f"malformed JSON: {context}".strip(), []
        row = loc[1] if len(loc) > 1 and loc[0] == "instances" and isinstance(loc[1], int) else None
        field_path = loc[2:] if row is not None else loc
        field = ".".join(str(p) for p in field_path) or None
        message = error.get("msg", "invalid")
        if error.get("type") == "extra_forbidden":
            message = "unknown column (not in the schema)"
        details.append({"row": row, "field": field, "message": message})
    first = details[0] if details else {"row": None, "field": None, "message": "invalid request"}
    where = f"row {first['row']}, " if first["row"] is not None else ""
    return 422, f"{where}field {first['field']}: {first['message']}", details


class ErrorDetail(BaseModel):
    row: int | None = None
    field: str | None = None
    message: str


class ErrorBody(BaseModel):
    code: int
    message: str
    details: list[ErrorDetail] = []


class ErrorResponse(BaseModel):
    """The body of every 4xx/5xx answer."""

    error: ErrorBody


class PredictResponse(BaseModel):
    predictions: list[Any]
    probabilities: list[list[float]] | None = None
    classes: list[Any] | None = None
    model_version: str


_ERRORS = {
    400: "malformed JSON",
    401: "missing or wrong API key",
    403: "the key does not have this route's role (predict or read)",
    404: "no such model (the path names one of the served models)",
    405: "method not allowed (predict is POST)",
    413: "body over the limit",
    415: "content type is not application/json",
    422: "a row breaks the schema: the details name field and row",
    503: "no model loaded yet, or overloaded (Retry-After)",
    504: "the model did not answer in time",
}


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"model": ErrorResponse, "description": _ERRORS[c]} for c in codes}


_encode = msgspec.json.encode


#: every role; the key in ``serving.api_key_env`` has them all
ROLES = frozenset({"predict", "read"})


def api_keys_from_env(
    serving: ServingConfig, environ: Mapping[str, str] = os.environ
) -> dict[str, frozenset[str]]:
    """The keys of ``serving.api_keys`` (variable name -> roles) with their roles, read from
    ``environ`` (in Serve: the replica's own environment, so no key travels with the app).

    Raises:
        ConfigError: a variable it names is not set.
    """
    keys: dict[str, frozenset[str]] = {}
    for env, roles in serving.api_keys.items():
        value = environ.get(env)
        if not value:
            raise ConfigError(
                f"serving.api_keys names {env}, which is not set in this process's environment "
                "(a Serve replica's): set it on every node (Kubernetes Secret, launcher env), "
                "or remove it from the config"
            )
        keys[value] = keys.get(value, frozenset()) | frozenset(roles)
    return keys


def _roles_of(given: str | None, keys: Mapping[str, Collection[str]]) -> Collection[str] | None:
    """The roles of the key ``given`` (compared in constant time with every key), or None."""
    found: Collection[str] | None = None
    for key, roles in keys.items():
        if given and hmac.compare_digest(given.encode(), key.encode()):
            found = roles
    return found


def create_app(
    *,
    name: str,
    schema: Schema,
    serving: ServingConfig,
    backend: Backend | None = None,
    api_key: str | None = None,
    api_keys: Mapping[str, Collection[str]] | None = None,
    backend_key: str | None = None,
    observer: Callable[[AccessRecord], None] | None = None,
    echo_request_id: bool = True,
    examples: list[dict[str, Any]] | None = None,
) -> FastAPI:
    """The FastAPI app for model ``name``.

    The backend is ``backend``, or the one attached later under ``backend_key`` with
    :func:`attach_backend` in the process that serves the app (a Serve replica).
    ``echo_request_id=False`` where a proxy in front already returns ``X-Request-Id`` (Serve's
    proxy does, and forwards the id it uses to the app, which logs it). ``examples`` are rows
    shown on ``/docs`` (the ones that pass the schema).

    ``api_key`` has every role; ``api_keys`` maps more keys to their roles (default: those of
    ``serving.api_keys``, read from this process's environment by :func:`api_keys_from_env`).

    The request body is decoded by the schema's :class:`~raymlops.contract.RequestContract`:
    its decoder checks the rows, and its type is the request model of ``/openapi.json``.
    """
    contract = RequestContract(
        schema, max_instances=serving.max_instances, name=f"{name.replace('-', '_').title()}Row"
    )
    request_ref, components = contract.json_schema()
    valid_examples = [
        row for row in (examples or []) if contract.from_records([row])[1].ok
    ][:3]
    body_schema: dict[str, Any] = {"schema": request_ref}
    if valid_examples:
        body_schema["example"] = {"instances": valid_examples}

    keys: dict[str, Collection[str]] = dict(
        api_keys_from_env(serving) if api_keys is None else api_keys
    )
    if api_key:
        keys[api_key] = ROLES
    auth_note = (
        "Every endpoint but /, /healthz and /readyz (this page too) needs `Authorization: "
        "Bearer <key>` or `X-API-Key`: predict needs a key with the `predict` role, the others "
        "one with `read`."
        if keys
        else "No API key is configured: the server only binds 127.0.0.1 by default."
    )
    app = FastAPI(
        title=f"raymlops: {name}",
        description=f"Predictions from the champion of `{name}` (KServe V1 shapes). {auth_note}",
        version="1",
        # served below, behind the key: the page lists every column and its ranges
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.backend = backend
    # predictions in this app (one per Serve replica); only touched on its event loop
    admission = app.state.admission = _Admission(limit=admitted_predictions(serving))
    app.add_middleware(
        RequestGuard,
        max_body_bytes=serving.max_body_bytes,
        observer=observer,
        echo_request_id=echo_request_id,
    )
    bearer = HTTPBearer(auto_error=False)
    header_key = APIKeyHeader(name="X-API-Key", auto_error=False)

    def requires(role: str) -> Any:
        async def check(
            credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
            key: str | None = Depends(header_key),  # noqa: B008
        ) -> None:
            if not keys:
                return
            roles = _roles_of(credentials.credentials if credentials else key, keys)
            if roles is None:
                raise _Unauthorized
            if role not in roles:
                raise _Forbidden(role)

        return Depends(check)

    can_predict, can_read = requires("predict"), requires("read")

    @app.exception_handler(_Unauthorized)
    async def _unauthorized(request: Request, exc: Exception) -> JSONResponse:
        return _error(401, "missing or wrong API key", WWW_Authenticate="Bearer")

    @app.exception_handler(_Forbidden)
    async def _forbidden(request: Request, exc: Exception) -> JSONResponse:
        return _error(403, f"this key does not have the {exc.args[0]!r} role this route needs")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own errors (an undecodable body, an unknown path or method) in our shape
        message = "malformed body: not UTF-8 JSON" if exc.status_code == 400 else str(exc.detail)
        return _error(exc.status_code, message, **(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message, details = _details(exc)
        return _error(status, message, details)

    def _backend() -> Backend:
        backend = app.state.backend or attached_backend(backend_key)
        if backend is None:
            raise _NotReady
        return backend

    @app.exception_handler(_NotReady)
    async def _not_ready(request: Request, exc: Exception) -> JSONResponse:
        return _error(503, "no model is loaded yet", **{"Retry-After": "1"})

    def _check_name(model: str) -> None:
        if model != name:
            raise _UnknownModel(model)

    @app.exception_handler(_UnknownModel)
    async def _unknown_model(request: Request, exc: Exception) -> JSONResponse:
        return _error(404, f"no model {exc.args[0]!r}; this server serves {name!r}")

    @app.get("/", tags=["health"])
    async def alive() -> dict[str, str]:
        """KServe V1 liveness."""
        return {"status": "alive"}

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", tags=["health"], responses=_responses(503))
    async def readyz() -> JSONResponse:
        try:
            status = await _backend().status()
        except _NotReady:
            return _error(503, "no model is loaded yet", **{"Retry-After": "1"})
        return JSONResponse(
            {"ready": bool(status.get("ready")), "model_version": status.get("model_version")}
        )

    @app.get("/openapi.json", include_in_schema=False, dependencies=[can_read])
    async def openapi_json() -> JSONResponse:
        return JSONResponse(app.openapi())

    def spec_url(request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/") + "/openapi.json"  # Serve's prefix

    @app.get("/docs", include_in_schema=False, dependencies=[can_read])
    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=spec_url(request), title=f"{app.title} - docs")

    @app.get("/redoc", include_in_schema=False, dependencies=[can_read])
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(openapi_url=spec_url(request), title=f"{app.title} - ReDoc")

    @app.get(
        "/v1/models", dependencies=[can_read], tags=["models"],
        responses=_responses(401, 403),
    )
    async def list_models() -> dict[str, list[str]]:
        """KServe V1: the served models."""
        return {"models": [name]}

    @app.get(
        "/v1/models/{model}",
        dependencies=[can_read],
        tags=["models"],
        responses=_responses(401, 403, 404, 405, 503),
    )
    async def model_status(model: str) -> Any:
        if model.endswith(":predict"):
            return _error(405, "predict takes POST", Allow="POST")
        _check_name(model)
        status = await _backend().status()
        canary = serving.canary.model_dump() if serving.canary.version else None
        answer = {
            "name": name,
            "ready": bool(status.get("ready")),
            "model_version": status.get("model_version"),
            "canary": canary,
            # why this replica serves another version than the alias names (None: it does not)
            "degraded": status.get("degraded"),
        }
        if status.get("prediction_log") is not None:  # the counts of the replica that answered
            answer["prediction_log"] = status["prediction_log"]
        return answer

    @app.post(
        "/v1/models/{model}:predict",
        response_model=PredictResponse,
        dependencies=[can_predict],
        tags=["models"],
        responses=_responses(400, 401, 403, 404, 413, 415, 422, 503, 504),
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": body_schema}}
        },
    )
    async def predict(model: str, request: Request) -> Any:
        _check_name(model)  # an unknown model is 404 whatever the body holds
        # counted from arrival, before the body is read: a burst is refused at once, whether
        # it piles up decoding, waiting for a batch or predicting
        if admission.in_flight >= admission.limit:
            return _error(503, "the model is overloaded; retry shortly", **{"Retry-After": "1"})
        admission.in_flight += 1
        try:
            return await _predict(request)
        finally:
            admission.in_flight -= 1

    async def _predict(request: Request) -> Any:
        try:
            body = await request.body()
        except ClientDisconnect:  # the guard refused the body (413) and already answered
            return _error(400, "the body was not received")
        try:
            rows = contract.decode(body)
            output = await asyncio.wait_for(
                _backend().predict(rows, request.state.request_id),
                timeout=serving.request_timeout_s,
            )
        except RequestRejected as exc:
            return _error(exc.status, exc.message, exc.details)
        except DataValidationError as exc:
            details = report_details(exc.report) if exc.report is not None else []
            return _error(422, str(exc).splitlines()[-1].strip(), details)
        except ServiceOverloaded:
            return _error(503, "the model is overloaded; retry shortly", **{"Retry-After": "1"})
        except TimeoutError:
            return _error(504, f"the model did not answer within {serving.request_timeout_s}s")
        # counted as predicted only once answered
        request.state.rows = len(rows)
        request.state.model_version = output.model_version
        return Response(
            _encode(
                {
                    "predictions": output.predictions,
                    "probabilities": output.probabilities,
                    "classes": output.classes,
                    "model_version": output.model_version,
                }
            ),
            media_type="application/json",
        )

    def openapi() -> dict[str, Any]:
        # the request model is the decoder's own type (msgspec), so the page cannot disagree
        # with what the server accepts; {model} is one of the served names
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes,
            )
            spec.setdefault("components", {}).setdefault("schemas", {}).update(components)
            for path in spec["paths"].values():
                for operation in path.values():
                    for parameter in operation.get("parameters", []):
                        if parameter.get("name") == "model" and parameter.get("in") == "path":
                            parameter["schema"] = {"type": "string", "enum": [name]}
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
