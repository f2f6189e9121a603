"""Serving suite: ``raymlops serve`` against the server a user would write by hand.

The same registered XGBoost version (100 rounds, depth 6) is served

- by the **baseline**, ``benchmarks/baseline_server.py``: FastAPI + pydantic rows, numpy
  standardisation read from the version's ``features.json``, ``Booster.inplace_predict`` with
  one thread, one uvicorn worker; no raymlops code on the request path; and
- by **raymlops**: :func:`raymlops.serving.app.build_application` of the project's config with
  its serving defaults (autoscaling included), on a local Ray bound to 127.0.0.1,

on two schemas: ``float30`` (scikit-learn's breast cancer data: 30 float columns) and ``churn``
(the example: categories, nulls, bools, ints). Before timing, both answer the same 1-row and
100-row requests and their probabilities must agree within 1e-6. Then wrk drives each in three
cells, c1 and c16 with single-row requests and c4 with 100-row requests; each cell is a pair
(baseline and raymlops back to back, the order alternating from pair to pair), and the table
shows the median over the pairs. The model deployment's running replicas are sampled every
0.5 s.

Serve's ingress modes are environment variables read when Ray starts, so each preset runs in a
child process with a Ray of its own: ``default`` (what raymlops starts: throughput-optimized,
Serve's HAProxy ingress on loopback), ``serve-proxy`` (the default with
``RAY_SERVE_ENABLE_HA_PROXY=0``: Serve's Python proxy, reaching replicas over gRPC),
``proxy-actor-calls`` (that proxy on Ray actor calls, as Ray 2.60 leaves it),
``direct-ingress`` (throughput-optimized with direct ingress) and ``ray-defaults``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from benchmarks.report import (
    Check,
    Figure,
    SuiteResult,
    UsageError,
    descendants,
    ray_nodes,
    require_cores,
)
from raymlops.loopback import is_loopback_host
from raymlops.runtime import HAPROXY_INGRESS_ENV, LOCAL_RAY_ENV

__all__ = ["CELLS", "PRESETS", "run"]

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "hand-written FastAPI"
TOLERANCE = 1e-6
CELLS = ((1, 1), (16, 1), (4, 100))  # (connections, rows per request)
_TO = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
#: the preset name of a run on a cluster given by --address: the env it was started with
CLUSTER = "cluster"
_NO_HAPROXY = {"RAY_SERVE_ENABLE_HA_PROXY": "0"}
#: the preset that serves with the prediction log (and the monitor's feed) off
NO_LOG = "no-prediction-log"
#: the route of the second app of the log's A/B (the same model with the log off)
LOG_OFF_PREFIX = "/log-off"
PRESETS: dict[str, dict[str, str]] = {
    # what a local Ray started by raymlops runs with (ensure_ray)
    "default": {**LOCAL_RAY_ENV, **HAPROXY_INGRESS_ENV},
    # the way back to Serve's Python proxy (the default before HAProxy)
    "serve-proxy": {**LOCAL_RAY_ENV, **_NO_HAPROXY},
    # that proxy before RAY_SERVE_PROXY_USE_GRPC: Ray 2.60 decides the proxy's transport before
    # its throughput mode turns gRPC on, so the proxy stays on actor calls unless asked
    "proxy-actor-calls": {**LOCAL_RAY_ENV, **_NO_HAPROXY, "RAY_SERVE_PROXY_USE_GRPC": "0"},
    "direct-ingress": {**_TO, **_NO_HAPROXY, "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"},
    "ray-defaults": dict(_NO_HAPROXY),
    # the default with serving.prediction_log.enabled: false (--prediction-log off; the log's
    # cost itself is measured by the A/B of two apps on one Ray, see run_log_ab)
    NO_LOG: {**LOCAL_RAY_ENV, **HAPROXY_INGRESS_ENV},
}
# (schema, preset) runs per mode; presets are compared on float30, the goal schema
PLANS = {
    "quick": [("float30", "default"), ("churn", "default")],
    "standard": [
        ("float30", "default"),
        ("churn", "default"),
        ("float30", "serve-proxy"),
        ("float30", "proxy-actor-calls"),
        ("float30", "direct-ingress"),
    ],  # fmt: skip
    "full": [(s, p) for p in PRESETS for s in ("float30", "churn")],
}
TIMING = {  # pairs per cell, warm-up and measured seconds per side
    "quick": (1, 0, 1),  # the answer check before timing is the warm-up
    "standard": (3, 1, 5),
    "full": (5, 2, 8),
}
#: pairs per cell of the prediction log's A/B (log on, log off; float30, preset default): the
#: cost is a few percent, so it needs more pairs than the ratios against the baseline
LOG_AB_PAIRS = {"quick": 1, "standard": 8, "full": 12}

WRK_SCRIPT = """\
local f = assert(io.open("{body}", "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,' ..
    '"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_status":%d,' ..
    '"errors_timeout":%d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


# -- the parent: models, children, the report ------------------------------------------------------


def run(mode: str, address: str | None = None, prediction_log: str | None = None) -> SuiteResult:
    """The serving suite; ``prediction_log`` "on" or "off" keeps only the runs with the log on
    (every preset but no-prediction-log) or off (no-prediction-log in the default's place)."""
    if address is not None:
        host = urlparse(address if "://" in address else f"tcp://{address}").hostname
        if not is_loopback_host(host):
            raise UsageError(
                f"the serving suite with --address needs a cluster on this machine (raymlops "
                f"cluster up; {address} is not a loopback address): the model files are in a "
                "local folder and wrk drives Serve's proxy from here"
            )
    if not shutil.which("wrk"):
        raise UsageError("the serving suite needs wrk: apt-get install -y wrk")
    require_cores(2, "the serving suite (wrk, the server and Ray share the cores)")
    pairs, warmup, duration = TIMING[mode]
    # a running cluster's ingress preset was fixed when it started: both schemas on it as it is
    plan = PLANS[mode] if address is None else [("float30", CLUSTER), ("churn", CLUSTER)]
    if prediction_log is not None and address is None:
        plan = log_plan(plan, prediction_log == "on")
    workdir = Path(tempfile.mkdtemp(prefix="raymlops-bench-serving-"))
    try:
        projects = {
            schema: prepare(schema, workdir / schema)
            for schema in dict.fromkeys(s for s, _ in plan)
        }
        runs, failed = [], []
        for preset in dict.fromkeys(p for _, p in plan):
            spec = {
                "preset": preset, "env": PRESETS.get(preset, {}), "address": address,
                "pairs": pairs, "warmup": warmup,
                "log_ab_pairs": LOG_AB_PAIRS[mode]
                if preset == "default" and prediction_log is None else 0,
                "duration": duration, "workdir": str(workdir / f"run-{preset}"),
                "projects": [projects[s] for s, p in plan if p == preset],
            }  # fmt: skip
            print(f"serving: preset {preset} on {', '.join(s for s, p in plan if p == preset)}",
                  flush=True)  # fmt: skip
            try:
                runs.append(_run_child(spec, workdir))
            except RuntimeError as exc:
                if preset in ("default", CLUSTER) or prediction_log == "off":
                    raise
                failed.append(f"Preset {preset} did not run: {exc}.")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = summarize(runs, mode, pairs)
    result.notes.extend(failed)
    return result


def log_plan(plan: list[tuple[str, str]], on: bool) -> list[tuple[str, str]]:
    """``plan`` with the prediction log only on, or only off (``--prediction-log on|off``)."""
    if on:
        return [(s, p) for s, p in plan if p != NO_LOG]
    return list(dict.fromkeys((s, NO_LOG if p == "default" else p) for s, p in plan
                              if p in ("default", NO_LOG)))  # fmt: skip


def prepare(schema: str, workdir: Path) -> dict[str, Any]:
    """Register the schema's XGBoost champion in-process (no Ray); write its request bodies."""
    import pandas as pd

    from benchmarks.champion import register_champion
    from raymlops.config import load_config
    from raymlops.data.sources import load_sklearn_frame
    from raymlops.examples import make_churn, write_example
    from raymlops.schema import Schema

    config_path = write_example(workdir, "churn" if schema == "churn" else "breast_cancer")
    config = load_config(config_path)
    if schema == "churn":
        raw = pd.read_csv(workdir / "data" / "train.csv")
        requests = make_churn(100, seed=1).drop(columns=[config.data.target])
    else:
        raw = load_sklearn_frame("sklearn:breast_cancer")
        requests = raw.drop(columns=[config.data.target]).sample(100, random_state=1)
    version_dir = workdir / "baseline-model"  # the hand-written server's copy of the files
    version = register_champion(config, raw, version_dir, reason="serving benchmark")
    records = json.loads(requests.to_json(orient="records", date_format="iso"))
    bodies = {}
    for rows in sorted({r for _, r in CELLS}):
        path = workdir / f"body_{rows}.json"
        path.write_text(json.dumps({"instances": records[:rows]}), encoding="utf-8")
        bodies[rows] = str(path)
    return {
        "schema": schema, "name": config.name, "config": str(config_path), "version": version,
        "version_dir": str(version_dir), "bodies": bodies,
        "columns": len(Schema.from_config(config).feature_columns),
    }  # fmt: skip


def _run_child(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    spec_path = workdir / f"spec-{spec['preset']}.json"
    out_path = workdir / f"out-{spec['preset']}.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.serving", str(spec_path), str(out_path)],
        cwd=ROOT, env=env, timeout=1800, check=False,
    )  # fmt: skip
    if done.returncode != 0 or not out_path.exists():
        raise RuntimeError(f"the serving run of preset {spec['preset']} failed "
                           f"(exit {done.returncode}); its output is above")  # fmt: skip
    return json.loads(out_path.read_text(encoding="utf-8"))


def summarize(runs: list[dict[str, Any]], mode: str, pairs: int) -> SuiteResult:
    figures: list[Figure] = []
    checks: list[Check] = []
    table: list[dict[str, str]] = []
    series: dict[str, list[list[float]]] = {}
    ratios: dict[tuple[str, str, int, int], float] = {}
    p50: dict[tuple[str, str], tuple[float, float]] = {}
    for run_ in runs:
        preset = run_["preset"]
        for block in run_["schemas"]:
            schema = block["schema"]
            checks.append(Check(**block["check"]))
            for key, points in block["replicas"].items():
                series[f"{schema} [{preset}] {key}"] = points
            for conc, rows in CELLS:
                cells = [
                    c for c in block["cells"] if c["connections"] == conc and c["rows"] == rows
                ]
                if not cells:
                    continue
                name = f"{schema} c{conc} {rows}-row [{preset}]"
                med = {side: _median_cell([c for c in cells if c["side"] == side])
                       for side in ("baseline", "raymlops")}  # fmt: skip
                pair_ratios = [r["rps"] / b["rps"] if b["rps"] else 0.0 for b, r in _pairs(cells)]
                ratio = statistics.median(pair_ratios)
                ratios[(schema, preset, conc, rows)] = ratio
                for side, system in (
                    ("baseline", BASELINE),
                    ("raymlops", f"raymlops serve ({preset})"),
                ):
                    m = med[side]
                    figures += [
                        Figure(name, side, system, "rps", m["rps"], "requests/s"),
                        Figure(name, side, system, "rows_per_s", m["rps"] * rows, "rows/s"),
                        Figure(name, side, system, "p50_ms", m["p50_ms"], "ms"),
                        Figure(name, side, system, "p99_ms", m["p99_ms"], "ms"),
                    ]  # fmt: skip
                if conc == 1:
                    p50[(schema, preset)] = (med["baseline"]["p50_ms"], med["raymlops"]["p50_ms"])
                b, r = med["baseline"], med["raymlops"]
                table.append({
                    "schema": schema, "preset": preset, "cell": f"c{conc}, {rows}-row",
                    "hand-written rps": f"{b['rps']:,.0f}", "raymlops rps": f"{r['rps']:,.0f}",
                    "hand-written rows/s": f"{b['rps'] * rows:,.0f}",
                    "raymlops rows/s": f"{r['rps'] * rows:,.0f}",
                    "p50 ms (hw / rm)": f"{b['p50_ms']:.2f} / {r['p50_ms']:.2f}",
                    "p99 ms (hw / rm)": f"{b['p99_ms']:.2f} / {r['p99_ms']:.2f}",
                    "ratio (rps)": f"**{ratio:.3f}x**",
                    "errors (hw / rm)": f"{b['errors']} / {r['errors']}",
                    "others' cores": f"{statistics.median(c['cpu_others'] for c in cells):.2f}",
                })  # fmt: skip
    notes = [
        f"Median of {pairs} pair(s) per cell; each pair runs the hand-written server and raymlops "
        "back to back, alternating which goes first; ratio = raymlops / hand-written requests/s "
        "within each pair, then the median. Only 2xx answers are counted.",
        "'others' cores' is the CPU the rest of the machine used during the cell (from "
        "/proc/stat): near 0 when nothing else ran; the load average before the run is below.",
    ]
    for run_ in runs:
        wide = [a for a in run_.get("listening", []) if not is_loopback_host(a.rsplit(":", 1)[0])]
        notes.append(
            f"Preset {run_['preset']}: our process tree listened on {len(run_.get('listening', []))}"
            f" TCP sockets, {len(wide)} of them not on loopback"
            + (f" ({', '.join(wide)})" if wide else "")
            + " (ss -ltnp; measured, not enforced here)."
        )
    fastest = _fastest_preset({k: v for k, v in ratios.items() if k[1] != NO_LOG})
    if fastest:
        notes.append(fastest)
    ab = [c for r in runs for b in r["schemas"] for c in b.get("log_ab", [])]
    log_cost = prediction_log_cost(ab)
    if log_cost:
        notes.append(log_cost)
    headline = _headline(ratios, p50)
    return SuiteResult(
        suite="serving", title=f"Serving: raymlops serve vs a hand-written FastAPI server ({mode})",
        figures=figures, checks=checks, table=table, headline=headline, notes=notes,
        extra={"runs": runs, "tolerance": TOLERANCE, "cells": CELLS},
        series={"running replicas over time (s)": series} if series else {},
    )  # fmt: skip


def _pairs(cells: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    by_pair: dict[int, dict[str, dict[str, Any]]] = {}
    for c in cells:
        by_pair.setdefault(c["pair"], {})[c["side"]] = c
    return [(p["baseline"], p["raymlops"]) for p in by_pair.values() if len(p) == 2]


def _median_cell(cells: list[dict[str, Any]]) -> dict[str, float]:
    return {
        "rps": statistics.median(c["rps"] for c in cells),
        "p50_ms": statistics.median(c["p50_ms"] for c in cells),
        "p99_ms": statistics.median(c["p99_ms"] for c in cells),
        "errors": sum(c["errors"] for c in cells),
    }


def _fastest_preset(ratios: dict[tuple[str, str, int, int], float]) -> str:
    presets = sorted({p for s, p, _, _ in ratios if s == "float30"})
    if len(presets) < 2:
        return ""
    score = {p: statistics.median([ratios[("float30", p, c, r)] for c, r in CELLS[1:]
                                   if ("float30", p, c, r) in ratios]) for p in presets}  # fmt: skip
    best = max(score, key=score.__getitem__)
    listed = ", ".join(f"{p} {v:.3f}x" for p, v in sorted(score.items(), key=lambda kv: -kv[1]))
    return (f"Fastest ingress preset on float30 (median ratio of the c16 1-row and c4 100-row "
            f"cells): **{best}** ({listed}). Presets run one after another, each paired with "
            "its own hand-written cells: compare their ratios, and trust the ranking only when "
            "'others' cores' stayed low.")  # fmt: skip


def log_costs(cells: list[dict[str, Any]]) -> dict[tuple[int, int], float]:
    """The prediction log's share of throughput per (connections, rows) cell of the A/B:
    the median over pairs of 1 - requests/s with the log on / with it off."""
    costs = {}
    for conc, rows in CELLS:
        pairs: dict[int, dict[str, float]] = {}
        for c in cells:
            if (c["connections"], c["rows"]) == (conc, rows):
                pairs.setdefault(c["pair"], {})[c["side"]] = c["rps"]
        shares = [1 - p["on"] / p["off"] for p in pairs.values() if p.get("off") and "on" in p]
        if shares:
            costs[(conc, rows)] = statistics.median(shares)
    return costs


def prediction_log_cost(cells: list[dict[str, Any]]) -> str:
    """The note on the prediction log's cost, from the A/B cells (float30, preset default)."""
    costs = log_costs(cells)
    if not costs:
        return ""
    pairs = max(c["pair"] for c in cells) + 1
    listed = ", ".join(f"c{c} {r}-row {cost:+.1%}" for (c, r), cost in costs.items())
    return (f"The prediction log's cost on float30 (the same model served twice on one Ray, "
            f"log on and log off, {pairs} alternated pair(s) per cell; the share of requests/s "
            f"it takes, negative: within noise): {listed} (goal: at most 5%).")  # fmt: skip


def _headline(ratios: dict[tuple[str, str, int, int], float], p50: dict) -> str:
    # the local default preset, or the cluster's own on a run with --address
    presets = {p for _, p, _, _ in ratios}
    main = CLUSTER if CLUSTER in presets else "default" if "default" in presets else NO_LOG
    parts = []
    for schema in ("float30", "churn"):
        if (schema, main, 16, 1) not in ratios:
            continue
        hw, rm = p50.get((schema, main), (0.0, 0.0))
        parts.append(
            f"{schema}: c16 1-row {ratios[(schema, main, 16, 1)]:.3f}x requests/s, "
            f"c4 100-row {ratios.get((schema, main, 4, 100), 0.0):.3f}x rows/s, "
            f"c1 p50 {rm:.2f} ms vs {hw:.2f} ms"
        )
    return f"raymlops serve ({main} preset) / hand-written server: " + "; ".join(parts) + "."


# -- the child: one Ray with one preset's env, both servers, the cells ---------------------------


def child(spec_path: str, out_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    workdir = Path(spec["workdir"])
    workdir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"preset": spec["preset"], "env": spec["env"], "schemas": []}
    with ray_serve(spec["env"], spec.get("address")) as base:
        import ray

        result["ray"] = ray.__version__
        result["nodes"] = ray_nodes()
        for project in spec["projects"]:
            result["schemas"].append(run_schema(project, base, spec, workdir))
            result.setdefault("listening", listening(os.getpid()))
    Path(out_path).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


def run_schema(project: dict[str, Any], serve_base: str, spec: dict[str, Any],
               workdir: Path) -> dict[str, Any]:  # fmt: skip
    from ray import serve

    from raymlops.config import load_config
    from raymlops.serving.app import build_application

    name = project["name"]
    path = f"/v1/models/{name}:predict"
    # an app name of our own: on a cluster given by --address, never replace a user's app
    app = f"raymlops-bench-{name}"
    bodies = {int(k): Path(v) for k, v in project["bodies"].items()}
    block: dict[str, Any] = {"schema": project["schema"], "cells": [], "replicas": {}}
    with baseline_server(Path(project["version_dir"]), name) as hand:
        config = load_config(project["config"])
        if spec["preset"] == NO_LOG:
            config = without_log(config)
        started = time.perf_counter()
        serve.run(build_application(config), name=app, route_prefix="/")
        wait_ready(serve_base + "/readyz", 180)
        block["deploy_s"] = round(time.perf_counter() - started, 2)
        urls = {"baseline": hand + path, "raymlops": serve_base + path}
        block["check"] = compare_answers(f"{project['schema']} [{spec['preset']}]", urls, bodies)
        if block["check"]["passed"]:
            with replica_sampler(app) as samples:
                for conc, rows in CELLS:
                    for pair in range(spec["pairs"]):
                        order = (
                            ("baseline", "raymlops") if pair % 2 == 0 else ("raymlops", "baseline")
                        )
                        for side in order:
                            cell = measure(urls[side], bodies[rows], conc, spec, workdir)
                            cell.update(side=side, pair=pair, connections=conc, rows=rows)
                            block["cells"].append(cell)
                            print(f"  {project['schema']:<8} c{conc:<2} {rows:>3}-row pair {pair} "
                                  f"{side:<9} {cell['rps']:8.1f} rps p50 {cell['p50_ms']:7.2f} ms "
                                  f"others {cell['cpu_others']:.2f} cores", flush=True)  # fmt: skip
            block["replicas"] = samples
            if spec.get("log_ab_pairs") and project["schema"] == "float30":
                block["log_ab"] = run_log_ab(config, app, urls["raymlops"], bodies, spec, workdir)
        serve.delete(app)
    return block


def without_log(config: Any) -> Any:
    """``config`` with ``serving.prediction_log.enabled: false``."""
    log = config.serving.prediction_log.model_copy(update={"enabled": False})
    serving = config.serving.model_copy(update={"prediction_log": log})
    return config.model_copy(update={"serving": serving})


def run_log_ab(
    config: Any, app: str, on_url: str, bodies: dict[int, Path], spec: dict[str, Any],
    workdir: Path,
) -> list[dict[str, Any]]:  # fmt: skip
    """The prediction log's cost: the same model served twice on this Ray, with the log on
    (``app``) and off (a second app under :data:`LOG_OFF_PREFIX`), each cell in alternated
    pairs. Two apps on one Ray share the machine's state, so the pairs differ only by the log
    (runs of separate presets drifted by more than the log costs)."""
    from ray import serve

    from raymlops.serving.app import build_application

    off_app = f"{app}-log-off"
    serve.run(build_application(without_log(config)), name=off_app, route_prefix=LOG_OFF_PREFIX)
    base = on_url.split("/v1/", 1)[0]
    wait_ready(base + LOG_OFF_PREFIX + "/readyz", 180)
    urls = {"on": on_url, "off": base + LOG_OFF_PREFIX + "/v1/" + on_url.split("/v1/", 1)[1]}
    cells = []
    for conc, rows in CELLS:
        for pair in range(spec["log_ab_pairs"]):
            for side in ("on", "off") if pair % 2 == 0 else ("off", "on"):
                cell = measure(urls[side], bodies[rows], conc, spec, workdir)
                cell.update(side=side, pair=pair, connections=conc, rows=rows)
                cells.append(cell)
                print(f"  log {side:<3} c{conc:<2} {rows:>3}-row pair {pair} {cell['rps']:8.1f} "
                      f"rps p99 {cell['p99_ms']:7.2f} ms", flush=True)  # fmt: skip
    serve.delete(off_app)
    return cells


def compare_answers(label: str, urls: dict[str, str], bodies: dict[int, Path]) -> dict[str, Any]:
    """Both servers answer the same rows; their probabilities must agree within TOLERANCE."""
    worst, bad = 0.0, []
    for rows, body in bodies.items():
        answers = {}
        for side, url in urls.items():
            with _open(url, body.read_bytes()) as response:
                answers[side] = json.loads(response.read())
        b, r = answers["baseline"], answers["raymlops"]
        if len(b["probabilities"]) != rows or len(r["probabilities"]) != rows:
            bad.append(
                f"{rows}-row: {len(b['probabilities'])} vs {len(r['probabilities'])} answers"
            )
            continue
        diff = max(abs(x - y) for pb, pr in zip(b["probabilities"], r["probabilities"], strict=True)
                   for x, y in zip(pb, pr, strict=True))  # fmt: skip
        worst = max(worst, diff)
        if diff > TOLERANCE or b["predictions"] != r["predictions"]:
            bad.append(f"{rows}-row request: max abs diff {diff:.3g}, labels equal "
                       f"{b['predictions'] == r['predictions']}")  # fmt: skip
    detail = (
        f"{label}: probabilities of the 1-row and 100-row requests, max abs diff "
        f"{worst:.3g} (tolerance {TOLERANCE:g})"
    ) + (f"; disagree: {'; '.join(bad)}" if bad else "")
    return {"name": f"serving {label}: equal answers", "passed": not bad, "detail": detail}


@contextlib.contextmanager
def replica_sampler(app: str, every: float = 0.5) -> Iterator[dict[str, list[list[float]]]]:
    """Running replicas of each deployment of ``app`` every ``every`` seconds, while open."""
    from ray import serve

    samples: dict[str, list[list[float]]] = {}
    stop = threading.Event()
    started = time.monotonic()

    def sample() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):  # a status call that fails is a missed sample
                status = serve.status().applications[app]
                for dep, overview in status.deployments.items():
                    running = sum(n for state, n in overview.replica_states.items()
                                  if getattr(state, "value", state) == "RUNNING")  # fmt: skip
                    samples.setdefault(dep, []).append(
                        [round(time.monotonic() - started, 2), running]
                    )
            stop.wait(every)

    thread = threading.Thread(target=sample, name="bench-replicas", daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(timeout=10)


@contextlib.contextmanager
def baseline_server(version_dir: Path, name: str) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same thread pinning a 1-CPU replica gets
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "baseline_server.py"), str(version_dir), name,
         str(port)], env=env, start_new_session=True,
    )  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", 60, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)


@contextlib.contextmanager
def ray_serve(env: dict[str, str], address: str | None = None) -> Iterator[str]:
    """A local Ray on 127.0.0.1 (its own temp dir, no dashboard) with ``env``, or the cluster at
    ``address``; Serve's base URL."""
    if address is not None:
        with cluster_serve(address) as base:
            yield base
        return
    ray_tmp = tempfile.mkdtemp(prefix="rmsb", dir="/tmp")  # short: Ray's socket paths are bounded
    # before Ray starts: its processes read these when they start (init_local_ray gives HAProxy
    # ports and files of its own)
    os.environ.update(env)
    import logging

    import ray
    from ray import serve

    from raymlops.runtime import init_local_ray

    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    port = free_port()
    try:
        # like every local Ray of raymlops: each of its servers on 127.0.0.1 only
        init_local_ray(
            address="local", include_dashboard=False, logging_level="WARNING",
            log_to_driver=False, _temp_dir=ray_tmp,
        )  # fmt: skip
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        with contextlib.suppress(Exception):
            ray.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)


@contextlib.contextmanager
def cluster_serve(address: str) -> Iterator[str]:
    """Join the cluster at ``address`` (its token found as every raymlops command finds it) and
    start Serve there with one proxy, on the head, on 127.0.0.1 (the nodes of a cluster on this
    machine would otherwise each try the same port). A Serve that already runs keeps its own
    port, read back from its controller. The suite's apps are deleted after each schema; the
    cluster's Serve is left running."""
    import logging

    import ray
    from ray import serve

    from raymlops.runtime import ensure_ray

    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    try:
        ensure_ray(address)
        serve.start(proxy_location="HeadOnly",
                    http_options={"host": "127.0.0.1", "port": free_port()})  # fmt: skip
        from ray.serve.context import _get_global_client

        # the controller's HTTP options: ours, or those of a Serve that was already running
        http = ray.get(_get_global_client()._controller.get_http_config.remote())
        yield f"http://127.0.0.1:{http.port}"
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()


# -- load and measurement ----------------------------------------------------------------------------


def measure(
    url: str, body: Path, connections: int, spec: dict[str, Any], workdir: Path
) -> dict[str, Any]:
    """Warm up, then one measured wrk run; with the cores the rest of the machine used."""
    if spec["warmup"]:
        wrk(url, body, connections, spec["warmup"], workdir)
    tick = os.sysconf("SC_CLK_TCK")
    busy0, ours0 = _cpu_jiffies(os.getpid())
    started = time.perf_counter()
    cell = wrk(url, body, connections, spec["duration"], workdir)
    elapsed = time.perf_counter() - started
    busy1, ours1 = _cpu_jiffies(os.getpid())
    cell["cpu_ours"] = round((ours1 - ours0) / tick / elapsed, 2)
    cell["cpu_others"] = round(max(0.0, (busy1 - busy0 - (ours1 - ours0)) / tick / elapsed), 2)
    return cell


def wrk(url: str, body: Path, connections: int, seconds: int, workdir: Path) -> dict[str, Any]:
    """Closed loop: ``connections`` connections, each sending its next request on an answer."""
    script = workdir / f"{body.stem}.lua"
    script.write_text(WRK_SCRIPT.format(body=body), encoding="utf-8")
    command = ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--timeout", "10s",
               "-s", str(script), url]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {done.stdout[-500:]} {done.stderr[-500:]}")
    raw = json.loads(line.split(" ", 1)[1])
    seconds_run = raw["duration_us"] / 1e6
    errors = sum(v for k, v in raw.items() if k.startswith("errors_"))
    return {
        "requests": raw["requests"],
        "seconds": seconds_run,
        "rps": (raw["requests"] - raw["errors_status"]) / seconds_run,  # 2xx answers only
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "errors": errors,
    }


def _cpu_jiffies(root_pid: int) -> tuple[int, int]:
    """(busy jiffies of the whole machine, jiffies of ``root_pid``'s process tree)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    ours = 0
    for pid in _process_tree(root_pid):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        values = stat[stat.rindex(")") + 2 :].split()
        # utime, stime; for the root also cutime, cstime: the wrk runs it has reaped
        ours += sum(int(v) for v in values[11 : 15 if pid == root_pid else 13])
    return busy, ours


def _process_tree(root_pid: int) -> set[int]:
    return {root_pid, *descendants(root_pid)}


def listening(root_pid: int) -> list[str]:
    """Local addresses of the TCP sockets our process tree listens on (``ss -ltnpH``)."""
    pids = _process_tree(root_pid)
    try:
        out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, timeout=10,
                             check=False).stdout  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return []
    found = []
    for line in out.splitlines():
        parts = line.split()
        owners = {int(c.split("=")[1].split(",")[0]) for c in " ".join(parts[5:]).split("pid")[1:]
                  if c.startswith("=")}  # fmt: skip
        if len(parts) >= 4 and owners & pids:
            found.append(parts[3])
    return sorted(set(found))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _open(url: str, data: bytes | None = None, timeout: float = 30) -> Any:
    """urlopen for our own loopback http:// URLs only."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"not a loopback URL: {url}")
    headers = {"Content-Type": "application/json"} if data is not None else {}
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310


def wait_ready(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers 200; fail at once when ``process`` exits."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        try:
            with _open(url, timeout=2) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last = repr(exc)[:200]
        time.sleep(0.25)  # a poll interval, not a wait for something to be done
    raise RuntimeError(f"{url} was not ready within {timeout:.0f}s (last: {last})")


if __name__ == "__main__":
    sys.exit(child(sys.argv[1], sys.argv[2]))
