"""Checks that need no Ray, made before a command starts it (and by ``raymlops config check``).

A typo in the target, a column the data does not have, a retrain source that matches nothing,
an alias or model the registry does not hold: each is found here in a second or two, from the
data's header and the registry's small files, instead of after Ray has started.

Example:
    >>> header = read_header(resolve_source("data/train.csv"))  # doctest: +SKIP
    >>> check_columns(schema, header, key="data.source")         # doctest: +SKIP
"""

from __future__ import annotations

import csv
import difflib
import io
from dataclasses import dataclass

from raymlops.data.sources import ResolvedSource, load_sklearn_frame, resolve_source
from raymlops.errors import ConfigError, DataValidationError, RegistryError
from raymlops.registry import Registry
from raymlops.schema import Schema

__all__ = [
    "ColumnsCheck",
    "Header",
    "check_columns",
    "check_model",
    "check_retrain_source",
    "read_header",
]

_HEAD_BYTES = 1 << 16  # a header line longer than this is not a table raymlops reads


@dataclass(frozen=True)
class Header:
    """The column names of a source's first file."""

    file: str
    columns: list[str]


@dataclass(frozen=True)
class ColumnsCheck:
    """What the header says about the declared schema (errors are raised, not kept)."""

    header: Header
    undeclared: list[str]  # in the data, not declared (data.extra: ignore)


def read_header(source: ResolvedSource) -> Header:
    """The column names of the first file of ``source``, reading only its first bytes."""
    if source.kind == "sklearn":
        return Header(source.source, [str(c) for c in load_sklearn_frame(source.source).columns])
    path = source.files[0]
    assert source.filesystem is not None  # files come with their filesystem
    if source.kind == "parquet":
        import pyarrow.parquet as pq

        schema = pq.read_schema(path, filesystem=source.filesystem)
        # a pandas index saved with the frame (``__index_level_0__``) is not a column of the data
        index = {
            c for c in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)
        }
        return Header(path, [name for name in schema.names if name not in index])
    with source.filesystem.open_input_stream(path, compression="detect") as stream:
        head = stream.read(_HEAD_BYTES).decode("utf-8", errors="replace")
    first = next(csv.reader(io.StringIO(head.splitlines()[0] if head else "")), [])
    return Header(path, [name.strip() for name in first])


def _close(name: str, names: list[str]) -> str:
    match = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def check_columns(schema: Schema, header: Header, *, key: str) -> ColumnsCheck:
    """The declared columns and the target against ``header`` (of the file at ``key``).

    Raises:
        ConfigError: the target is not a column of the data (most often a typo in the config).
        DataValidationError: a declared column is not in the data, or a column the data has is
            not declared while ``data.extra`` is ``error``: the data breaks the schema (exit 3,
            worded like the validation report, before Ray starts).
    """
    present = set(header.columns)
    if schema.target not in present:
        raise ConfigError(
            f"data.target: {schema.target!r} is not a column of {header.file} ({key})"
            f"{_close(schema.target, header.columns)} (its columns: {', '.join(header.columns)})"
        )
    missing = [name for name in schema.names if name not in present]
    undeclared = [name for name in header.columns if name not in schema.columns]
    lines = [
        f"  column {name!r}: missing column (declared under data.columns)"
        f"{_close(name, header.columns)}"
        for name in missing
    ]
    if schema.extra == "error":
        lines += [f"  column {name!r}: unexpected column (not declared)" for name in undeclared]
    if lines:
        raise DataValidationError(
            f"{header.file} ({key}) does not match data.columns:\n" + "\n".join(lines) + "\n"
            "fix the names under data.columns or in the data; role: ignore keeps a column out "
            f"of the model, data.extra: ignore drops undeclared ones (its columns: "
            f"{', '.join(header.columns)})"
        )
    return ColumnsCheck(header, undeclared)


def check_retrain_source(retrain_source: str | None, schema: Schema) -> str:
    """``monitoring.retrain_source`` in words: the files it matches now and their columns.

    Raises:
        DataValidationError: its files' columns do not match the schema.
    """
    if not retrain_source:
        return "not set (drift is reported, nothing is retrained)"
    try:
        source = resolve_source(retrain_source)
    except ConfigError:
        return f"{retrain_source}: no file yet (a retrain needs labelled rows there)"
    check_columns(schema, read_header(source), key="monitoring.retrain_source")
    return f"{retrain_source} ({len(source.files)} {source.kind} file(s))"


def check_model(registry: Registry, ref: str, config: str) -> str:
    """The version ``ref`` (an alias or a version) names in ``registry``.

    Raises:
        RegistryError: the model has no version yet ("no model"), or ``ref`` names none.
    """
    if not registry.versions():
        raise RegistryError(
            f"no model {registry.name!r} in {registry.location}: nothing was trained there yet; "
            f"run `raymlops train --config {config} --promote`"
        )
    return registry.resolve(ref)
