"""Find the files behind ``data.source`` (pure; no Ray).

A source is a local path, a glob (``data/**/*.csv``), a folder, a URI that ``pyarrow.fs``
understands (``s3://bucket/data/*.parquet``), or ``sklearn:<name>`` for scikit-learn's bundled
datasets.

Example:
    >>> resolve_source("sklearn:breast_cancer").kind
    'sklearn'
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import os
import re
from dataclasses import dataclass, field

import pandas as pd
import pyarrow.fs as pafs

from raymlops.errors import ConfigError, DataValidationError

__all__ = ["ResolvedSource", "load_sklearn_frame", "resolve_source"]

_FORMATS = {".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet", ".pq": "parquet"}
SKLEARN_DATASETS = ("breast_cancer", "iris", "wine", "diabetes")


@dataclass(frozen=True)
class ResolvedSource:
    """The concrete files of a source (or the name of a bundled dataset)."""

    source: str
    kind: str  # csv | parquet | sklearn
    files: list[str] = field(default_factory=list)
    filesystem: pafs.FileSystem | None = None
    sizes: list[int] = field(default_factory=list)


def _format_of(path: str) -> str | None:
    lower = path.lower()
    for ext, kind in _FORMATS.items():
        if lower.endswith(ext):
            return kind
    return None


def _has_glob(path: str) -> bool:
    return any(ch in path for ch in "*?[")


def resolve_source(source: str) -> ResolvedSource:
    """Expand a source into its files, checking they exist and share one format.

    Raises:
        ConfigError: nothing matches, the format is unknown, or formats are mixed.
        DataValidationError: a matched file is empty.
    """
    if source.startswith("sklearn:"):
        name = source.split(":", 1)[1]
        if name not in SKLEARN_DATASETS:
            raise ConfigError(
                f"data.source: unknown bundled dataset {name!r}; "
                f"use one of: {', '.join('sklearn:' + n for n in SKLEARN_DATASETS)}"
            )
        return ResolvedSource(source=source, kind="sklearn")
    if "://" in source:
        # `?endpoint_override=...&scheme=http` are options of the filesystem, not a glob
        location, query = _split_query(source)
        try:
            fs, path = pafs.FileSystem.from_uri(_glob_base(location) + query)
        except (ValueError, OSError) as exc:
            raise ConfigError(f"data.source: cannot open {source!r}: {exc}") from None
        pattern = location.split("://", 1)[1] if _has_glob(location) else None
        infos = _list_remote(fs, path, pattern)
    else:
        fs = pafs.LocalFileSystem()
        infos = _list_local(source)
    files = [(p, size) for p, size in infos if _format_of(p)]
    if not files:
        raise ConfigError(
            f"data.source: no CSV or Parquet file matches {source!r}; check the path (relative "
            "paths are read from the config file's folder) or the glob"
        )
    kinds = {_format_of(p) for p, _ in files}
    if len(kinds) > 1:
        raise ConfigError(f"data.source: {source!r} mixes CSV and Parquet files; pick one format")
    empty = [p for p, size in files if size == 0]
    if empty:
        raise DataValidationError(f"data file is empty: {empty[0]} (0 bytes); nothing was trained")
    return ResolvedSource(
        source=source,
        kind=kinds.pop() or "csv",
        files=[p for p, _ in files],
        filesystem=fs,
        sizes=[s for _, s in files],
    )


def _list_local(source: str) -> list[tuple[str, int]]:
    path = os.path.expanduser(source)
    if _has_glob(path):
        matches = sorted(glob.glob(path, recursive=True))
    elif os.path.isdir(path):
        matches = sorted(os.path.join(root, f) for root, _, names in os.walk(path) for f in names)
    elif os.path.exists(path):
        matches = [path]
    else:
        raise ConfigError(
            f"data.source: file not found: {path}; check the path (relative paths are read from "
            "the config file's folder)"
        )
    return [(m, os.path.getsize(m)) for m in matches if os.path.isfile(m)]


def _split_query(uri: str) -> tuple[str, str]:
    """``s3://b/k?endpoint_override=h:1`` -> (``s3://b/k``, ``?endpoint_override=h:1``)."""
    location, mark, query = uri.partition("?")
    if mark and "=" in query and "/" not in query:
        return location, f"?{query}"
    return uri, ""


def _glob_base(uri: str) -> str:
    scheme, rest = uri.split("://", 1)
    parts = rest.split("/")
    base: list[str] = []
    for part in parts:
        if _has_glob(part):
            break
        base.append(part)
    return f"{scheme}://{'/'.join(base)}"


def _list_remote(fs: pafs.FileSystem, path: str, pattern: str | None) -> list[tuple[str, int]]:
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return [(path, info.size or 0)]
    if info.type == pafs.FileType.NotFound:
        raise ConfigError(f"data.source: not found: {path}")
    selector = pafs.FileSelector(path, recursive=True)
    found = [
        (i.path, i.size or 0) for i in fs.get_file_info(selector) if i.type == pafs.FileType.File
    ]
    if pattern:
        # fnmatch's "*" also crosses "/", so "data/*.csv" behaves like "data/**/*.csv" here
        found = [(p, s) for p, s in found if fnmatch.fnmatch(p, pattern)]
    return sorted(found)


def load_sklearn_frame(source: str) -> pd.DataFrame:
    """A bundled scikit-learn dataset as a frame; column names in snake_case, label ``target``."""
    from sklearn import datasets

    name = source.split(":", 1)[1]
    bunch = getattr(datasets, f"load_{name}")(as_frame=True)
    frame = bunch.frame.copy()
    frame.columns = [_snake(str(c)) for c in frame.columns]
    return frame


def _snake(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def file_digest(fs: pafs.FileSystem, path: str, chunk: int = 1 << 20) -> str:
    """sha256 of one file's bytes, streamed."""
    digest = hashlib.sha256()
    with fs.open_input_stream(path) as stream:
        while block := stream.read(chunk):
            digest.update(block)
    return digest.hexdigest()
