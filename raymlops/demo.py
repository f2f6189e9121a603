"""The whole loop on generated churn data, as ``raymlops demo`` runs it.

Stages, in order (each timed; :class:`DemoResult` has them all):

1. **train** the champion (v1) with the Tune search of the example config, gate, promote;
2. **serve** it with Ray Serve on 127.0.0.1, with the DriftMonitor watching its traffic;
3. **normal traffic**: rows like the training data over HTTP; the monitor checks each window
   and starts no retrain;
4. **drift**: labelled rows with shifted covariates and a changed concept land in
   ``data/fresh/`` (the retrain source), and rows like them are sent over HTTP;
5. **retrain**: drift holds for ``consecutive_windows`` windows, the monitor submits one retrain
   Ray job, which trains on the fresh data, passes the gate against v1 and is promoted;
6. **swap**: Serve answers with the new version.

Example:
    >>> result = run_demo(Path("demo"))  # doctest: +SKIP
    >>> result.served_version  # doctest: +SKIP
    'v2'
"""

from __future__ import annotations

import json
import shutil
import socket
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from raymlops.config import ProjectConfig, load_config
from raymlops.errors import RaymlopsError
from raymlops.examples import make_churn, write_example

__all__ = ["DemoResult", "run_demo"]

_REQUEST_ROWS = 50
_NORMAL_WINDOWS = 3
_DRIFT_WINDOWS_MAX = 6


@dataclass
class DemoResult:
    """What the demo did, for its summary."""

    config_path: Path
    url: str = ""
    stages: dict[str, float] = field(default_factory=dict)
    champion_before: str = ""
    served_version: str = ""
    decisions: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    retrain: dict[str, Any] | None = None
    reports: list[str] = field(default_factory=list)
    workspace: str = ""
    train_result: Any = None


Events = Callable[[str, str], None]  # (kind, text): kind is "start", "end", "info" or "decision"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _call(url: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(  # noqa: S310 - our own server on 127.0.0.1
        url, data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310
        return json.loads(answer.read())


def _send(url: str, model: str, frame: pd.DataFrame) -> list[str]:
    """POST the rows in requests of ``_REQUEST_ROWS``, 4 at a time; the versions that answered."""
    records = json.loads(frame.to_json(orient="records", date_format="iso"))
    chunks = [records[i : i + _REQUEST_ROWS] for i in range(0, len(records), _REQUEST_ROWS)]
    endpoint = f"{url}/v1/models/{model}:predict"
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda rows: _call(endpoint, {"instances": rows}), chunks))
    return [a["model_version"] for a in answers]


class _Stages:
    def __init__(self, result: DemoResult, events: Events) -> None:
        self.result, self.events = result, events

    def run(self, name: str, work: Callable[[], str]) -> None:
        self.events("start", name)
        started = time.perf_counter()
        detail = work()
        self.result.stages[name] = time.perf_counter() - started
        self.events("end", f"{name}\t{self.result.stages[name]:.1f}\t{detail}")


def _fresh_project(workdir: Path, events: Events) -> Path:
    config_path = workdir / "raymlops.yaml"
    if not config_path.exists():
        write_example(workdir, "churn")
        events("info", f"example project written to {workdir}")
        return config_path
    config = load_config(config_path)
    for leftover in (Path(config.storage), workdir / "data" / "fresh"):
        if leftover.is_dir() and workdir.resolve() in leftover.resolve().parents:
            shutil.rmtree(leftover)  # a demo starts from nothing: its own registry and data only
    events("info", f"reusing {config_path}; its registry and fresh data were reset")
    return config_path


def _wait_for(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise RaymlopsError(f"demo: {what} did not happen within {timeout_s:.0f}s")


def run_demo(
    workdir: Path,
    *,
    address: str | None = None,
    events: Events | None = None,
    stage_log: Any = None,
) -> DemoResult:
    """Run the loop in ``workdir`` (created if needed). Raises RaymlopsError if a stage fails."""
    import ray
    from ray import serve

    from raymlops.monitoring.monitor import get_monitor, start_monitor, stop_monitor
    from raymlops.monitoring.policy import retrain_outcome_path
    from raymlops.monitoring.reports import workspace_path
    from raymlops.pipeline import open_registry, train
    from raymlops.runtime import ensure_ray
    from raymlops.serving.app import build_application

    events = events or (lambda kind, text: None)
    config_path = _fresh_project(Path(workdir), events)
    result = DemoResult(config_path=config_path)
    stages = _Stages(result, events)
    config: ProjectConfig = load_config(config_path)
    port = _free_port()
    config = config.model_copy(
        update={"serving": config.serving.model_copy(update={"port": port})}
    )
    name, rule = config.name, config.monitoring
    ensure_ray(address, jobs=True)
    seen: set[int] = set()

    def status() -> dict[str, Any]:
        monitor = get_monitor(name)
        state = ray.get(monitor.status.remote(), timeout=30) if monitor else {}
        for decision in state.get("recent_decisions", []):
            if decision["window"] not in seen:
                seen.add(decision["window"])
                result.decisions.append(decision)
                events("decision", json.dumps(decision, default=str))
        return state

    def train_champion() -> str:
        result.train_result = train(config, promote=True, stages=stage_log, verbose=0)
        if not result.train_result.promoted:
            raise RaymlopsError("demo: the first model was not promoted")
        result.champion_before = result.train_result.version
        score = result.train_result.metrics[result.train_result.metric]
        return f"{name} {result.champion_before} is champion ({result.train_result.metric} {score:.3f})"

    def start_serving() -> str:
        start_monitor(config_path)  # before traffic: the replicas find it at their first batch
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_application(config), name=name, route_prefix="/")
        result.url = f"http://127.0.0.1:{port}"
        ready = _call(f"{result.url}/v1/models/{name}")
        return f"{result.url} answers with {ready['model_version']}; monitor:{name} watches"

    def normal_traffic() -> str:
        rows = rule.window_rows * _NORMAL_WINDOWS
        versions = _send(result.url, name, make_churn(rows, seed=1).drop(columns=["churned"]))
        state = _wait_for(
            lambda: (s := status()).get("windows_seen", 0) >= _NORMAL_WINDOWS and s,
            120,
            f"the monitor checking {_NORMAL_WINDOWS} windows",
        )
        if state["jobs"]:
            raise RaymlopsError("demo: the monitor retrained on traffic like the training data")
        return f"{rows} rows answered by {sorted(set(versions))}; {state['windows_seen']} windows, no retrain"

    def drifted_traffic() -> str:
        fresh = workdir / "data" / "fresh"
        fresh.mkdir(parents=True, exist_ok=True)
        make_churn(4000, seed=2, drift=True).to_csv(fresh / "labelled.csv", index=False)
        drifted = make_churn(rule.window_rows * _DRIFT_WINDOWS_MAX, seed=3, drift=True)
        features = drifted.drop(columns=["churned"])
        sent = 0
        for start in range(0, len(features), rule.window_rows):
            _send(result.url, name, features.iloc[start : start + rule.window_rows])
            sent += rule.window_rows
            expected = _NORMAL_WINDOWS + sent // rule.window_rows
            state = _wait_for(
                lambda expected=expected: (s := status()).get("windows_seen", 0) >= expected and s,
                120,
                "the monitor checking the drifted window",
            )
            if state["jobs"]:
                return f"{sent} drifted rows sent; 4000 labelled rows in {fresh}; retrain started"
        raise RaymlopsError("demo: drift was sent but the monitor started no retrain")

    def retrain() -> str:
        state = _wait_for(
            lambda: (s := status()).get("jobs") and s["job_in_flight"] is None and s,
            300,
            "the retrain job finishing",
        )
        result.jobs = state["jobs"]
        job = result.jobs[-1]
        if job["status"] != "SUCCEEDED":
            raise RaymlopsError(f"demo: retrain job {job['submission_id']} {job['status']}: {job['message']}")
        registry = open_registry(config)
        newest = registry.versions()[-1]  # the demo's registry holds v1 and the retrained one
        result.retrain = registry.storage.read_json(retrain_outcome_path(name, newest))  # type: ignore[assignment]
        assert result.retrain is not None
        verdict = "promoted" if result.retrain["promoted"] else "turned down by the gate"
        return f"job {job['submission_id']} SUCCEEDED: {result.retrain['version']} {verdict}"

    def swap() -> str:
        new = result.retrain["version"] if result.retrain and result.retrain["promoted"] else None
        if new is None:
            raise RaymlopsError("demo: the retrained model was not promoted, so serving kept v1")
        result.served_version = _wait_for(
            lambda: (v := _send(result.url, name, make_churn(1, seed=4).drop(columns=["churned"]))[0]) == new and v,
            60,
            f"Serve answering with {new}",
        )
        return f"Serve answers with {result.served_version} (was {result.champion_before})"

    try:
        stages.run("train the champion", train_champion)
        stages.run("serve it, with the drift monitor", start_serving)
        stages.run("normal traffic", normal_traffic)
        stages.run("drifted traffic", drifted_traffic)
        stages.run("retrain job, gate, promotion", retrain)
        stages.run("serving swaps to the new version", swap)
        final = status()
        result.reports = list(final.get("reports", []))
        result.workspace = open_registry(config).storage.path(workspace_path(name))
    finally:
        if get_monitor(name) is not None:
            stop_monitor(name)
        serve.shutdown()
    return result
