"""The request contract: one definition, generated from the schema, for decoder, validator and docs.

:class:`RequestContract` builds, from :class:`~raymlops.schema.Schema`, one msgspec ``Struct``
per row. That one type is

* the JSON decoder of the HTTP API (:meth:`RequestContract.decode`: bytes -> typed
  :class:`Columns`, types, nulls, ranges, categories and string lengths checked in C),
* the OpenAPI request model (:meth:`RequestContract.json_schema`, generated from the same type,
  so the page and the decoder cannot disagree),

and :meth:`RequestContract.from_records` is the same rules, vectorised in numpy, for rows that
arrive as Python dicts (in-process callers) and for the error report of a refused body. Rows
that the decoder accepted are valid: they are not validated again.

The coercion policy (the same for HTTP and data files, see :mod:`raymlops.data.validation`): a
value that arrives typed must have the declared type. A JSON number is a ``float``; an ``int``
is a whole number (``32`` or ``32.0``, as JSON Schema's ``integer``; ``32.5`` is refused); a
``bool`` is ``true``/``false`` (not ``1`` nor ``"yes"``); the string ``"55.5"`` is not a
number. Only text without types (CSV cells) is parsed, and only into the declared type.
Columns with the role ``id``, ``timestamp`` or ``ignore`` are not features: a request may leave
them out or send null.

Example:
    >>> contract = RequestContract(schema, max_instances=1000)  # doctest: +SKIP
    >>> columns = contract.decode(b'{"instances": [{"age": 42, "plan": "pro"}]}')  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional

import msgspec
import numpy as np

from raymlops.config import ColumnSpec
from raymlops.data.validation import MAX_EXAMPLES, ColumnIssue, ValidationReport, expected_text
from raymlops.schema import Schema, describe_column

__all__ = [
    "MAX_STRING_LENGTH",
    "Columns",
    "RequestContract",
    "RequestRejected",
    "contract_for",
]

#: the longest string a request may carry in one field (ids, categories, datetimes)
MAX_STRING_LENGTH = 1024
_OPTIONAL_ROLES = ("id", "timestamp", "ignore")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_NUMERIC = ("float", "int", "bool")
_PATH = re.compile(r"at `\$(?P<path>[^`]*)`$")
_ROW_PATH = re.compile(r"^\.instances\[(?P<row>\d+)\](?:\.(?P<field>.+))?$")
_BACKTICK = re.compile(r"field `(?P<field>[^`]+)`")


@dataclass(frozen=True)
class Columns:
    """``n`` typed rows as one numpy array per input column.

    float, int and bool columns are float64 (NaN where missing; bools 0/1), datetime columns
    ``datetime64[ns]`` in UTC (NaT where missing), category and string columns object arrays
    of ``str`` or ``None``. ``digest`` names the schema the rows were checked against.
    """

    n: int
    data: dict[str, np.ndarray]
    digest: str

    def __len__(self) -> int:
        return self.n

    @classmethod
    def concat(cls, parts: Sequence[Columns]) -> Columns:
        """One batch of several requests' rows (all checked against the same schema)."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        data = {k: np.concatenate([p.data[k] for p in parts]) for k in first.data}
        return cls(sum(p.n for p in parts), data, first.digest)

    def to_records(self) -> list[dict[str, Any]]:
        """Rows as JSON-ready dicts (NaN/NaT as None; ints of int columns stay floats)."""
        out: list[dict[str, Any]] = [{} for _ in range(self.n)]
        for name, values in self.data.items():
            if values.dtype.kind == "M":
                plain = [None if np.isnat(v) else str(v) + "Z" for v in values]
            elif values.dtype.kind == "f":
                plain = [None if math.isnan(v) else float(v) for v in values]
            else:
                plain = list(values)
            for row, value in zip(out, plain, strict=True):
                row[name] = value
        return out


class RequestRejected(Exception):
    """A request body the contract refuses: ``status`` 400 or 422, with per-field details."""

    def __init__(self, status: int, message: str, details: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


def _is_optional(spec: ColumnSpec) -> bool:
    return spec.nullable or spec.effective_role in _OPTIONAL_ROLES


def _value_type(spec: ColumnSpec) -> Any:
    """The msgspec type of one present value, with its constraints."""
    if spec.type == "float":
        return Annotated[float, msgspec.Meta(ge=spec.min, le=spec.max)]
    if spec.type == "int":
        # JSON Schema's integer: a whole number, 32 or 32.0 (the wholeness is checked in numpy;
        # json_schema says "integer")
        return Annotated[float, msgspec.Meta(ge=spec.min, le=spec.max)]
    if spec.type == "bool":
        return bool
    if spec.type == "category" and spec.categories and spec.unknown == "error":
        return Literal[tuple(spec.categories)]  # type: ignore[valid-type]
    return Annotated[str, msgspec.Meta(max_length=MAX_STRING_LENGTH)]


def _show(value: object) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _datetime_ns(text: str) -> int | None:
    """An ISO 8601 string -> nanoseconds since 1970 UTC (naive means UTC); None if not one."""
    try:
        stamp = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)
    delta = stamp - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no file or log could hold it
        return False
    return True


class RequestContract:
    """Decoder, validator and OpenAPI model of prediction requests for one schema."""

    def __init__(self, schema: Schema, *, max_instances: int | None = None, name: str = "Row"):
        self.schema = schema
        self.columns = schema.input_columns
        self.max_instances = max_instances
        self.digest = hashlib.sha256(
            json.dumps(schema.to_dict(), sort_keys=True).encode()
        ).hexdigest()[:16]
        fields: list[Any] = []
        rename: dict[str, str] = {}
        for i, column in enumerate(self.columns):
            spec = schema.columns[column]
            value = _value_type(spec)
            meta = msgspec.Meta(description=spec.description or describe_column(spec))
            attr = f"f{i}"  # any column name is a JSON key; not every one is an identifier
            rename[attr] = column
            if _is_optional(spec):
                fields.append((attr, Annotated[Optional[value], meta], None))  # noqa: UP045
            else:
                fields.append((attr, Annotated[value, meta]))
        forbid = schema.extra == "error"
        self.row_type = msgspec.defstruct(
            name, fields, rename=rename, forbid_unknown_fields=forbid, kw_only=True
        )
        instances = Annotated[
            list[self.row_type],  # type: ignore[name-defined]
            msgspec.Meta(
                min_length=1, max_length=max_instances, description="rows to predict"
            ),
        ]
        self.request_type = msgspec.defstruct(
            "PredictRequest", [("instances", instances)], forbid_unknown_fields=True
        )
        self._decoder = msgspec.json.Decoder(self.request_type)
        self._kinds = [(column, schema.columns[column]) for column in self.columns]

    def __reduce__(self) -> tuple[Any, ...]:
        # msgspec types made at runtime do not pickle: a contract travels (inside the FastAPI
        # app that Serve ships to its replicas) as its schema, and is built again there
        return (_rebuild, (self.schema, self.max_instances, self.row_type.__name__))

    # -- the fast path: bytes -> typed columns -----------------------------------------------------

    def decode(self, body: bytes) -> Columns:
        """A request body -> typed columns, or :class:`RequestRejected` naming field and row."""
        try:
            request = self._decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise self._rejection(body, exc, malformed=False) from None
        except msgspec.DecodeError as exc:
            raise self._rejection(body, exc, malformed=True) from None
        rows = [msgspec.structs.astuple(r) for r in request.instances]
        raw = list(zip(*rows, strict=True)) if rows else [() for _ in self.columns]
        columns, report = self._typed(raw, len(rows), checked=True)
        if not report.ok:
            raise _rejected(report)
        return columns

    def _typed(
        self, raw: Sequence[Sequence[Any]], n: int, *, checked: bool
    ) -> tuple[Columns, ValidationReport]:
        """Per column: Python values -> a typed array; with ``checked=False`` also every rule."""
        issues = _Issues()
        data: dict[str, np.ndarray] = {}
        for (column, spec), values in zip(self._kinds, raw, strict=True):
            data[column] = self._column(column, spec, values, issues, checked=checked)
        return Columns(n, data, self.digest), ValidationReport(rows=n, issues=issues.found)

    def _column(
        self,
        column: str,
        spec: ColumnSpec,
        values: Sequence[Any],
        issues: _Issues,
        *,
        checked: bool,
    ) -> np.ndarray:
        expected = expected_text(spec)
        kind = spec.type
        if kind in _NUMERIC:
            if checked:  # the decoder already made these floats and bools, and checked them
                typed = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
                if kind == "int":
                    issues.add(column, "wrong type", expected, _fractional(typed), values)
                return typed
            typed, wrong = _numbers(values, kind)
            if kind == "int":
                wrong |= _fractional(typed)
                typed[wrong] = np.nan
        elif kind == "datetime":
            stamps = [None if v is None else _datetime_ns(v) if isinstance(v, str) else None
                      for v in values]
            wrong = np.array(
                [v is not None and s is None for v, s in zip(values, stamps, strict=True)],
                dtype=bool,
            )
            typed = np.array(
                [np.iinfo(np.int64).min if s is None else s for s in stamps], dtype=np.int64
            ).view("datetime64[ns]")
        else:
            typed = np.empty(len(values), dtype=object)
            typed[:] = values
            if checked:
                return typed
            wrong = np.array(
                [v is not None and not (isinstance(v, str) and _encodable(v)) for v in values],
                dtype=bool,
            )
            typed[wrong] = None
        issues.add(column, "wrong type", expected, wrong, values)
        if checked:
            return typed
        present = np.array([v is not None for v in values], dtype=bool) & ~wrong
        if not _is_optional(spec):
            nulls = np.array([v is None for v in values], dtype=bool)
            issues.add(column, "null in non-nullable column", "a value (or set nullable: true)",
                       nulls, values)
        if kind in ("float", "int"):
            finite = np.isfinite(typed)
            issues.add(column, "not a finite number", expected, present & ~finite, values)
            ok = present & finite
            with np.errstate(invalid="ignore"):
                if spec.min is not None:
                    issues.add(column, "out of range", expected, ok & (typed < spec.min), values)
                if spec.max is not None:
                    issues.add(column, "out of range", expected, ok & (typed > spec.max), values)
            typed = np.where(ok, typed, np.nan)
        elif kind in ("category", "string"):
            long = np.array(
                [isinstance(v, str) and len(v) > MAX_STRING_LENGTH for v in typed], dtype=bool
            )
            issues.add(column, "too long", f"at most {MAX_STRING_LENGTH} characters", long,
                       values)
            if kind == "category" and spec.categories and spec.unknown == "error":
                known = np.isin(typed, np.asarray(spec.categories, dtype=object))
                issues.add(column, "unknown category", expected, present & ~known, values)
        return typed

    # -- the same rules for dict rows -------------------------------------------------------------

    def from_records(self, records: Sequence[Mapping[str, Any]]) -> tuple[Columns, ValidationReport]:
        """Rows as dicts -> typed columns and the report of every rule they break (numpy)."""
        n = len(records)
        raw = [[r.get(c) for r in records] for c in self.columns]
        columns, report = self._typed(raw, n, checked=False)
        extra = _Issues()
        known = set(self.columns)
        for row, record in enumerate(records):
            for key in record:
                if key == self.schema.target:
                    extra.add_one(str(key), "the target column", _TARGET_SENT, row, record[key])
                elif key not in known and self.schema.extra == "error":
                    extra.add_one(str(key), "unexpected column", "only the declared columns",
                                  row, record[key])
        report.issues[:0] = extra.found
        return columns, report

    def check(self, columns: Columns) -> Columns:
        """Columns checked against another schema -> checked against this one (a swap moved the
        version to a new schema while the ingress still decodes the old one)."""
        if columns.digest == self.digest:
            return columns
        report_columns, report = self.from_records(columns.to_records())
        if not report.ok:
            raise _rejected(report)
        return report_columns

    # -- the one model, as JSON Schema ------------------------------------------------------------

    def json_schema(self, ref_template: str = "#/components/schemas/{name}") -> tuple[
        dict[str, Any], dict[str, Any]
    ]:
        """The request's JSON Schema (a ``$ref``) and its components, from the decoder's type."""
        (request,), components = msgspec.json.schema_components(
            [self.request_type], ref_template=ref_template
        )
        row = components[self.row_type.__name__]
        for column in self.columns:
            spec = self.schema.columns[column]
            if spec.type == "int":  # decoded as a number, accepted only when whole
                prop = row["properties"][column]
                for part in [prop, *prop.get("anyOf", [])]:
                    if part.get("type") == "number":
                        part["type"] = "integer"
            if spec.categories:  # msgspec sorts a Literal's values; show the declared order
                prop = row["properties"][column]
                for part in [prop, *prop.get("anyOf", [])]:
                    if "enum" in part:
                        part["enum"] = list(spec.categories)
        return request, components

    # -- errors -----------------------------------------------------------------------------------

    def _rejection(self, body: bytes, exc: Exception, *, malformed: bool) -> RequestRejected:
        """Why a body was refused: the numpy report of its rows where it parses as JSON,
        else the decoder's own message (400 for malformed JSON, 422 otherwise)."""
        try:
            # the standard parser reads what msgspec refuses (NaN, Infinity, lone surrogates),
            # so such rows get a 422 naming the field instead of a bare "malformed"
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            parsed = None
        instances = parsed.get("instances") if isinstance(parsed, dict) else None
        if (
            isinstance(instances, list)
            and instances
            and all(isinstance(r, dict) for r in instances)
            and (self.max_instances is None or len(instances) <= self.max_instances)
        ):
            _, report = self.from_records(instances)
            if not report.ok:
                return _rejected(report)
        message = str(exc)
        if malformed:
            return RequestRejected(400, f"malformed JSON: {message}", [])
        return _from_msgspec(message, self.schema.target)


def _fractional(values: np.ndarray) -> np.ndarray:
    """Finite values with a fraction (not an int)."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(values) & (np.floor(values) != values)


def _numbers(values: Sequence[Any], kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Strict typing of Python values: float and int take numbers (an int a whole one, checked
    by the caller), bool takes bool."""
    out = np.full(len(values), np.nan)
    wrong = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        if v is None:
            continue
        if kind == "bool":
            ok = isinstance(v, (bool, np.bool_))
        else:
            ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
                v, (bool, np.bool_)
            )
        if not ok:
            wrong[i] = True
            continue
        try:
            out[i] = float(v)
        except OverflowError:  # an int too large for a float: not a finite number
            out[i] = np.inf
    return out, wrong


class _Issues:
    """Collects :class:`ColumnIssue` from masks (counts, first rows and values)."""

    def __init__(self) -> None:
        self.found: list[ColumnIssue] = []
        self._by_key: dict[tuple[str, str], ColumnIssue] = {}

    def add(
        self, column: str, problem: str, expected: str, mask: np.ndarray, values: Sequence[Any]
    ) -> None:
        count = int(mask.sum())
        if not count:
            return
        positions = np.flatnonzero(mask)[:MAX_EXAMPLES]
        examples = [(int(p) + 1, _show(values[int(p)])) for p in positions]
        self.found.append(ColumnIssue(column, problem, expected, count, examples))

    def add_one(self, column: str, problem: str, expected: str, row: int, value: Any) -> None:
        issue = self._by_key.get((column, problem))
        if issue is None:
            issue = ColumnIssue(column, problem, expected, 0, [])
            self._by_key[(column, problem)] = issue
            self.found.append(issue)
        issue.count += 1
        if len(issue.examples) < MAX_EXAMPLES:
            issue.examples.append((row + 1, _show(value)))


def report_details(report: ValidationReport) -> list[dict[str, Any]]:
    """A report -> the API's ``[{row, field, message}]`` (rows 1-based, as in every message
    raymlops prints: row 1 is ``instances[0]``), first row first."""
    details = [
        {
            "row": row,
            "field": issue.column,
            "message": f"{issue.problem} (expected {_for_client(issue.expected)}): {value}",
        }
        for issue in report.issues
        for row, value in issue.examples
    ]
    details += [
        {
            "row": None,
            "field": issue.column,
            "message": f"{issue.problem} (expected {_for_client(issue.expected)})",
        }
        for issue in report.issues
        if not issue.examples
    ]
    details += [{"row": None, "field": None, "message": p} for p in report.problems]
    # rows first, then fields by name: the decoder and the numpy path list problems alike
    return sorted(details, key=lambda d: (d["row"] is None, d["row"] or 0, str(d["field"])))


def _rejected(report: ValidationReport) -> RequestRejected:
    details = report_details(report)
    return RequestRejected(422, _headline(details), details)


def _headline(details: list[dict[str, Any]]) -> str:
    if not details:
        return "invalid request"
    first = details[0]
    where = f"row {first['row']}, " if first["row"] is not None else ""
    return f"{where}field {first['field']}: {first['message']}"


#: what a client that sent the target column is told
_TARGET_SENT = "input columns only: the model predicts this one; leave it out of the request"
# advice to the operator in a validation message ("(or set nullable: true)"): a client cannot act
# on the project's config, so an HTTP answer leaves it out
_CONFIG_ADVICE = re.compile(r"\s*\(or set [^)]*\)")


def _for_client(expected: str) -> str:
    return _CONFIG_ADVICE.sub("", expected)


def _from_msgspec(message: str, target: str | None = None) -> RequestRejected:
    """A msgspec validation message ("... - at `$.instances[2].age`") -> a 422 with details."""
    found = _PATH.search(message)
    text = message[: found.start()].rstrip(" -") if found else message
    path = found.group("path") if found else ""
    row_match = _ROW_PATH.match(path)
    row = int(row_match.group("row")) + 1 if row_match else None  # 1-based, as everywhere
    field = row_match.group("field") if row_match else (path.lstrip(".") or None)
    named = _BACKTICK.search(text)
    if named and (row_match is None or row_match.group("field") is None):
        field = named.group("field")
    if "unknown field" in text:
        text = (
            f"the target column (expected {_TARGET_SENT})"
            if field is not None and field == target
            else "unknown column (not in the schema)"
        )
    details = [{"row": row, "field": field, "message": text}]
    return RequestRejected(422, _headline(details), details)


def _rebuild(schema: Schema, max_instances: int | None, name: str) -> RequestContract:
    return RequestContract(schema, max_instances=max_instances, name=name)


_CACHE: dict[tuple[str, int | None], RequestContract] = {}


def contract_for(schema: Schema, max_instances: int | None = None) -> RequestContract:
    """The contract of ``schema`` (built once per process and schema)."""
    key = (json.dumps(schema.to_dict(), sort_keys=True), max_instances)
    contract = _CACHE.get(key)
    if contract is None:
        contract = _CACHE[key] = RequestContract(schema, max_instances=max_instances)
    return contract
