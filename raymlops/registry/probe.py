"""Load a version and score its own reference rows in a child process, before anyone relies on it.

A model file can match its manifest and still break its loader: a few changed bytes in an
XGBoost model were seen to segfault the process that loads it. Loaded in the registry's caller
(``registry promote``) or in a Serve replica, such a file takes that process down, and every
replica that follows the alias dies with it. So before an alias moves, and before a replica
swaps, the version is loaded and scores up to :data:`PROBE_ROWS` rows of its own
``reference.parquet`` in a separate Python process; a crash, an error, a hang or non-finite
scores there refuse the version, and the caller keeps what it had.

The child gets the storage URI on stdin (never on its command line, where ``ps`` would show
credentials in it) and answers one JSON line on stdout.

Example:
    >>> probe_version(registry, "v3")  # doctest: +SKIP
    ProbeResult(version='v3', rows=32, seconds=1.9)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

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
    request = json.dumps(
        {
            "storage": _storage_location(registry),
            "name": registry.name,
            "version": version,
            "rows": rows,
        }
    )
    started = time.perf_counter()
    where = f"{registry.name} {version}"
    try:
        child = subprocess.run(
            [sys.executable, "-m", "raymlops.registry.probe"],
            input=request,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            env={**os.environ, "PYTHONFAULTHANDLER": "0"},
        )
    except subprocess.TimeoutExpired:
        raise ProbeError(
            f"{where}: loading it and scoring its reference rows did not finish in "
            f"{timeout_s:.0f}s; refusing it (the version in use stays)"
        ) from None
    seconds = time.perf_counter() - started
    if child.returncode < 0:
        name = signal.Signals(-child.returncode).name
        raise ProbeError(
            f"{where}: the model crashed the process that loaded it ({name}) although its "
            "files match the manifest; refusing it (the version in use stays). Retrain or "
            "re-register it"
        )
    answer = _last_json(child.stdout)
    if child.returncode != 0 or answer is None or not answer.get("ok"):
        reason = (answer or {}).get("error") or _tail(child.stderr) or f"exit {child.returncode}"
        raise ProbeError(
            f"{where}: cannot load it and score its reference rows: {reason}; "
            "refusing it (the version in use stays)"
        )
    return ProbeResult(version, int(answer["rows"]), seconds)


def _last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        try:
            payload = json.loads(line)
        except ValueError:
            continue
        return payload if isinstance(payload, dict) else None
    return None


def _tail(text: str, lines: int = 3) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


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


def main() -> None:
    request = json.loads(sys.stdin.read())
    try:
        scored = _score(request["storage"], request["name"], request["version"], request["rows"])
    except Exception as exc:  # reported to the parent, which refuses the version
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}))
        sys.exit(1)
    print(json.dumps({"ok": True, "rows": scored}))


if __name__ == "__main__":
    main()
