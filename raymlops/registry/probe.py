"""Load a version and score its own reference rows in a child process, before anyone relies on it.

A model file can match its manifest and still break its loader: a few changed bytes in an
XGBoost model were seen to segfault the process that loads it. Loaded in the registry's caller
(``registry promote``) or in a Serve replica, such a file takes that process down, and every
replica that follows the alias dies with it. So before an alias moves, and before a replica
swaps, the version is loaded and scores up to :data:`PROBE_ROWS` rows of its own
``reference.parquet`` in a separate Python process; a crash, an error, a hang or non-finite
scores there refuse the version, and the caller keeps what it had.

The child is forked from a forkserver (a clean process started once, with the model libraries
imported); it gets the storage URI through a pipe (never on a command line, where ``ps`` would
show credentials in it) and answers through the pipe.

Example:
    >>> probe_version(registry, "v3")  # doctest: +SKIP
    ProbeResult(version='v3', rows=32, seconds=1.9)
"""

from __future__ import annotations

import functools
import multiprocessing
import signal
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raymlops.errors import IntegrityError

if TYPE_CHECKING:
    from raymlops.registry.store import Registry

__all__ = ["PROBE_ROWS", "PROBE_TIMEOUT_S", "ProbeError", "ProbeResult", "probe_version"]

#: reference rows the child scores: enough to exercise every feature, few enough to take ms
PROBE_ROWS = 32
#: a child that neither answers nor dies in this long has hung: the version is refused
PROBE_TIMEOUT_S = 300.0


class ProbeError(IntegrityError):
    """A version that verifies but cannot be loaded or cannot score its own reference rows."""


@dataclass(frozen=True)
class ProbeResult:
    """A version that loaded and scored ``rows`` reference rows in a child process."""

    version: str
    rows: int
    seconds: float


def _storage_location(registry: Registry) -> str:
    # the child may start in another folder: a local root is absolute, a URI is as given
    return registry.storage.root if registry.storage.is_local else registry.storage.uri


def probe_version(
    registry: Registry,
    version: str,
    *,
    rows: int = PROBE_ROWS,
    timeout_s: float = PROBE_TIMEOUT_S,
) -> ProbeResult:
    """Load ``version`` and score its reference rows in a child Python process.

    Raises:
        ProbeError: the child crashed (a signal), failed, hung, or scored non-finite values.
    """
    request = {
        "storage": _storage_location(registry),
        "name": registry.name,
        "version": version,
        "rows": rows,
    }
    started = time.perf_counter()
    where = f"{registry.name} {version}"
    context = _context()
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(request, send), daemon=True)
    child.start()
    send.close()
    child.join(timeout_s)
    if child.is_alive():
        child.kill()
        child.join()
        raise ProbeError(
            f"{where}: loading it and scoring its reference rows did not finish in "
            f"{timeout_s:.0f}s; refusing it (the version in use stays)"
        )
    seconds = time.perf_counter() - started
    if child.exitcode is not None and child.exitcode < 0:
        name = signal.Signals(-child.exitcode).name
        raise ProbeError(
            f"{where}: the model crashed the process that loaded it ({name}) although its "
            "files match the manifest; refusing it (the version in use stays). Retrain or "
            "re-register it"
        )
    answer = receive.recv() if receive.poll() else None
    receive.close()
    if child.exitcode != 0 or not isinstance(answer, dict) or not answer.get("ok"):
        reason = (answer or {}).get("error") or f"exit {child.exitcode}"
        raise ProbeError(
            f"{where}: cannot load it and score its reference rows: {reason}; "
            "refusing it (the version in use stays)"
        )
    return ProbeResult(version, int(answer["rows"]), seconds)


@functools.cache
def _context() -> Any:
    """A forkserver: one clean process, started once with the model libraries imported, that
    forks a child per probe (milliseconds instead of seconds of imports; no threads of the
    caller, such as a Serve replica's, are copied into the child)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__, "raymlops.predictor", "xgboost", "sklearn"])
    return context


def _child(request: dict[str, Any], send: Any) -> None:
    try:
        scored = _score(request["storage"], request["name"], request["version"], request["rows"])
    except Exception as exc:  # reported to the parent, which refuses the version
        send.send({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        sys.exit(1)
    send.send({"ok": True, "rows": scored})


def _score(storage: str, name: str, version: str, rows: int) -> int:
    """In the child: load the version through the verified path and score its reference rows."""
    import numpy as np

    from raymlops.predictor import load_predictor, read_reference
    from raymlops.registry.store import Registry
    from raymlops.storage import Storage

    registry = Registry(Storage.from_uri(storage, create=False), name, probe=None)
    predictor = load_predictor(registry, version)
    reference = read_reference(registry, version).head(rows)
    if reference.empty:
        raise ValueError("reference.parquet has no rows to score")
    raw = reference[[c for c in predictor.schema.input_columns if c in reference.columns]]
    scores = predictor.scores(predictor.validate(raw))
    if len(scores) != len(raw):
        raise ValueError(f"{len(raw)} rows gave {len(scores)} scores")
    if not np.all(np.isfinite(np.asarray(scores, dtype=np.float64))):
        raise ValueError("the model gave non-finite scores for its own reference rows")
    return len(raw)
