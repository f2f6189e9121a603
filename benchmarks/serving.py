"""Serving throughput: plain uvicorn+FastAPI vs the raymlops Ray Serve app (issue 4).

The same registered model (an XGBoost churn model, registered in-process without Ray) is served

- by **plain**: one uvicorn process (1 worker, uvloop + httptools, no access log) running the
  FastAPI app of :func:`raymlops.serving.api.create_app` with a ``LocalBackend`` (the model is
  called in-process), and
- by **Serve**: :func:`raymlops.serving.app.build_application` on a local Ray (the ingress
  deployment with the same FastAPI app + the ``@serve.batch`` model deployment), with 1 or 2
  model replicas and batching on (``max_batch_size`` 64) or off (``max_batch_size`` 1),

and each is driven by the same closed-loop load generator (wrk with a Lua script for the POST
body; a Python aiohttp generator in a child process when wrk is not installed) at concurrency
1 and 16, with single-row and 100-row requests, for a fixed duration after a warm-up. Every
cell reports requests/s, rows/s, p50 and p99 latency and the ratio Serve / plain.

Goals (issue 4), at concurrency 16: Serve >= 0.5x plain on single-row requests, and >= 1.0x
plain rows/s on 100-row requests.

Usage::

    .venv/bin/python benchmarks/serving.py                       # the full matrix (~4-5 min)
    .venv/bin/python benchmarks/serving.py --replicas 2 --batching on --concurrency 16
    .venv/bin/python benchmarks/serving.py --preset throughput   # RAY_SERVE_THROUGHPUT_OPTIMIZED=1
    .venv/bin/python benchmarks/serving.py --preset haproxy      # RAY_SERVE_ENABLE_HA_PROXY=1
    .venv/bin/python benchmarks/serving.py --env RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0 \\
        --max-batch-size 32 --batch-wait-ms 2 --max-ongoing 64 --no-plain --plain-from prev.json

Ray Serve settings that are environment variables are read when Ray's processes start, so one
run uses one set of them (``--env``/``--preset``); deployment options (replicas, batching,
max_ongoing_requests) vary within a run. Everything listens on 127.0.0.1 where Ray lets it; the
sockets that our processes listen on are recorded in the JSON (``listening``), from ``ss``.

Writes ``benchmarks/results/serving.json`` (``--out``) and ``serving.png`` when matplotlib can
be imported. Exit status 0 when the goals are met (or not measured), 1 when a measured goal is
missed, 2 on a bad argument or when a server fails to start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere, without installing
    sys.path.insert(0, str(ROOT))

from raymlops.runtime import LOCAL_RAY_ENV  # noqa: E402 - after the path set-up above

RESULTS = ROOT / "benchmarks" / "results"
NAME = "churn"
PREDICT = f"/v1/models/{NAME}:predict"
GOALS = {1: 0.5, 100: 1.0}  # rows per request -> lowest Serve/plain ratio at the top concurrency

PRESETS: dict[str, dict[str, str]] = {
    "default": dict(LOCAL_RAY_ENV),  # what a local Ray started by raymlops runs with
    "ray-defaults": {},  # Serve as Ray ships it
    "throughput": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},  # with its direct ingress
    "haproxy": {"RAY_SERVE_ENABLE_HA_PROXY": "1"},
    "throughput+haproxy": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"},
}

WRK_SCRIPT = """\
local f = assert(io.open("{body}", "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_status":%d,' ..
    '"errors_timeout":%d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="serving",
        description="Requests/s, rows/s and latency of plain uvicorn+FastAPI vs raymlops Serve.",
    )
    parser.add_argument("--replicas", nargs="+", type=int, default=[1, 2], help="model replicas")
    parser.add_argument(
        "--batching", nargs="+", choices=("on", "off"), default=["off", "on"],
        help="Serve batching: on (max_batch_size --max-batch-size) or off (max_batch_size 1)",
    )  # fmt: skip
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 16], help="connections")
    parser.add_argument("--rows", nargs="+", type=int, default=[1, 100], help="rows per request")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per cell")
    parser.add_argument(
        "--repeat", type=int, default=1, help="measure each (plain, Serve) pair this many times"
    )
    parser.add_argument("--max-batch-size", type=int, default=None, help="batching on: (64)")
    parser.add_argument(
        "--batch-wait-ms", type=float, default=None, help="batch_wait_timeout_s in ms: (5)"
    )
    parser.add_argument(
        "--max-ongoing", type=int, default=None, help="serving.max_ongoing_requests: (32)"
    )
    parser.add_argument(
        "--replica-cpus", type=float, default=None, help="serving.replica_cpus: (0.5)"
    )
    parser.add_argument(
        "--prediction-log", choices=("on", "off"), default=None,
        help="serving.prediction_log.enabled of the Serve app: (on; plain logs nothing)",
    )  # fmt: skip
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default="default", help="a set of Serve env vars"
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE",
        help="an environment variable for Ray's processes (repeatable), applied after --preset",
    )  # fmt: skip
    parser.add_argument("--no-plain", action="store_true", help="skip the plain baseline")
    parser.add_argument(
        "--plain-threads", type=int, default=1,
        help="OMP_NUM_THREADS of the plain server (1, as Ray gives a replica of <= 1 CPU; 0: unset)",
    )  # fmt: skip
    parser.add_argument("--no-serve", action="store_true", help="only the plain baseline")
    parser.add_argument(
        "--plain-from", type=Path, default=None,
        help="take the plain numbers from an earlier JSON (with --no-plain)",
    )  # fmt: skip
    parser.add_argument(
        "--loadgen", choices=("auto", "wrk", "python"), default="auto", help="load generator"
    )
    parser.add_argument("--label", default="", help="a name for this run, kept in the JSON")
    parser.add_argument("--out", type=Path, default=RESULTS / "serving.json", help="JSON path")
    parser.add_argument("--seed", type=int, default=0, help="data seed")
    args = parser.parse_args(argv)
    for key in ("replicas", "concurrency", "rows"):
        if min(getattr(args, key)) < 1:
            parser.error(f"--{key} must be >= 1")
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be > 0 and --warmup >= 0")
    env = dict(PRESETS[args.preset])
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--env needs KEY=VALUE, not {item!r}")
        env[key] = value
    args.ray_env = env
    if args.no_plain and args.no_serve:
        parser.error("--no-plain and --no-serve leave nothing to run")
    return args


# -- the model and the request bodies ------------------------------------------------------------


def prepare_project(workdir: Path, seed: int) -> Path:
    """A churn project with an XGBoost champion registered in-process (no Ray); its config."""
    import pandas as pd

    from raymlops.config import load_config
    from raymlops.examples import write_example
    from raymlops.registry import Registry
    from raymlops.schema import Schema
    from raymlops.storage import Storage
    from tests.helpers import register_model  # the same in-process registration the tests use

    config_path = write_example(workdir, "churn", rows=5000)
    config = load_config(config_path)
    registry = Registry(Storage.from_uri(config.storage), config.name)
    version = register_model(
        registry,
        pd.read_csv(workdir / "data" / "train.csv"),
        Schema.from_config(config),
        model="xgboost",
        params={"max_depth": 6, "eta": 0.1, "subsample": 0.9, "colsample_bytree": 0.9},
        seed=seed,
        max_rounds=100,
    )
    registry.promote(version, reason="serving benchmark")
    return config_path


def write_bodies(workdir: Path, rows: list[int], seed: int) -> dict[int, Path]:
    """One JSON body per request size: ``{"instances": [...]}`` of generated churn rows."""
    from raymlops.examples import make_churn

    frame = make_churn(max(rows), seed=seed + 1).drop(columns=["churned"])
    records = json.loads(frame.to_json(orient="records", date_format="iso"))
    paths = {}
    for n in rows:
        path = workdir / f"body_{n}.json"
        path.write_text(json.dumps({"instances": records[:n]}), encoding="utf-8")
        paths[n] = path
    return paths


# -- load generation -----------------------------------------------------------------------------


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


def check_predict(url: str, body: Path, rows: int) -> None:
    """One request; raises unless it answers 200 with one prediction per row."""
    with _open(url, body.read_bytes()) as response:
        answer = json.loads(response.read())
    if len(answer.get("predictions", [])) != rows:
        raise RuntimeError(f"{url} answered {answer!r:.200}")


def wait_ready(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
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
            last = f"HTTP {exc.code}: {exc.read()[:200]!r}"
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last = repr(exc)[:200]
        time.sleep(0.25)
    raise RuntimeError(f"{url} was not ready within {timeout:.0f}s (last: {last})")


def pick_loadgen(choice: str) -> str:
    if choice == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    if choice == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk), use --loadgen python")
    return choice


def run_load(
    kind: str, url: str, body: Path, concurrency: int, duration: float, workdir: Path
) -> dict[str, Any]:
    """Closed loop: ``concurrency`` connections, each sending the next request on an answer."""
    if kind == "wrk":
        script = workdir / f"{body.stem}.lua"
        script.write_text(WRK_SCRIPT.format(body=body), encoding="utf-8")
        seconds = max(1, round(duration))
        command = [
            "wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s",
            "-s", str(script), url,
        ]  # fmt: skip
    else:
        command = [
            sys.executable, str(Path(__file__).resolve()), "--_loadgen", url, str(body),
            str(concurrency), str(duration),
        ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=duration + 60, check=False
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"{command[0]} failed: {done.stdout[-500:]} {done.stderr[-500:]}")
    raw = json.loads(line.split(" ", 1)[1])
    seconds = raw["duration_us"] / 1e6
    errors = sum(v for k, v in raw.items() if k.startswith("errors_"))
    return {
        "requests": raw["requests"],
        "seconds": seconds,
        "rps": raw["requests"] / seconds,
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "errors": errors,
        "error_kinds": {k[7:]: v for k, v in raw.items() if k.startswith("errors_") and v},
    }


def _python_loadgen(url: str, body_path: str, concurrency: int, duration: float) -> None:
    """The fallback generator (a child process): prints the same WRKJSON line as wrk's script."""
    import aiohttp

    body = Path(body_path).read_bytes()
    latencies: list[float] = []
    errors = {"status": 0, "read": 0}

    async def worker(session: aiohttp.ClientSession, stop: float) -> None:
        headers = {"Content-Type": "application/json"}
        while time.perf_counter() < stop:
            start = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status >= 400:
                        errors["status"] += 1
            except aiohttp.ClientError:
                errors["read"] += 1
                continue
            latencies.append(time.perf_counter() - start)

    async def main() -> float:
        connector = aiohttp.TCPConnector(limit=concurrency)
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            start = time.perf_counter()
            stop = start + duration
            await asyncio.gather(*(worker(session, stop) for _ in range(concurrency)))
            return time.perf_counter() - start

    elapsed = asyncio.run(main())
    ordered = sorted(latencies) or [0.0]

    def pct(q: float) -> int:
        return int(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1e6)

    result = {
        "requests": len(latencies), "duration_us": int(elapsed * 1e6), "p50_us": pct(50),
        "p99_us": pct(99), "max_us": int(ordered[-1] * 1e6), "errors_connect": 0,
        "errors_read": errors["read"], "errors_write": 0, "errors_status": errors["status"],
        "errors_timeout": 0,
    }  # fmt: skip
    print("WRKJSON " + json.dumps(result), flush=True)


def _cpu_jiffies(root_pid: int) -> tuple[int, int]:
    """(busy jiffies of the whole machine, jiffies of ``root_pid``'s process tree)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    ours = 0
    for pid in _process_tree(root_pid, names=False):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        values = stat[stat.rindex(")") + 2 :].split()
        # utime, stime; for the root also cutime, cstime: the load generators it has reaped
        ours += sum(int(v) for v in values[11 : 15 if pid == root_pid else 13])
    return busy, ours


def measure_cell(
    target: str, kind: str, url: str, body: Path, rows: int, concurrency: int,
    args: argparse.Namespace, workdir: Path,
) -> dict[str, Any]:  # fmt: skip
    """Warm up, then one measured run; with the CPU used by us and by the rest of the machine."""
    if args.warmup > 0:
        run_load(kind, url, body, concurrency, args.warmup, workdir)
    tick = os.sysconf("SC_CLK_TCK")
    busy0, ours0 = _cpu_jiffies(os.getpid())
    started = time.perf_counter()
    result = run_load(kind, url, body, concurrency, args.duration, workdir)
    elapsed = time.perf_counter() - started
    busy1, ours1 = _cpu_jiffies(os.getpid())
    ours = (ours1 - ours0) / tick / elapsed
    cell = {"target": target, "rows": rows, "concurrency": concurrency, **result}
    cell["rows_per_s"] = cell["rps"] * rows
    # cores busy during the cell: ours (servers, Ray, the load generator) and everyone else's
    cell["cpu_ours"] = round(ours, 2)
    cell["cpu_others"] = round(max(0.0, (busy1 - busy0) / tick / elapsed - ours), 2)
    return cell


# -- what listens --------------------------------------------------------------------------------


def _process_tree(root_pid: int, *, names: bool = True) -> dict[int, str]:
    """pid -> command line of ``root_pid`` and its descendants (from /proc)."""
    parents: dict[int, int] = {}
    comms: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
        comms[int(entry.name)] = stat[stat.index("(") + 1 : stat.rindex(")")]
    tree = {root_pid}
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    if not names:
        return dict.fromkeys(tree, "")
    return {pid: _command(pid, comms.get(pid, "?")) for pid in tree}


def _command(pid: int, fallback: str) -> str:
    # Ray sets its workers' titles (ray::ProxyActor, ray::ServeReplica:...) in the command line
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return fallback
    words = raw.replace(b"\0", b" ").decode(errors="replace").split()
    if not words:
        return fallback
    head = Path(words[0]).name if "/" in words[0] else words[0]
    return " ".join([head, *words[1:]])[:60]


def listening(root_pid: int) -> list[dict[str, Any]]:
    """TCP sockets listened on by ``root_pid`` and its descendants (``ss -ltnpH``)."""
    names = _process_tree(root_pid)
    pids = set(names)
    try:
        out = subprocess.run(
            ["ss", "-ltnpH"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    found = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 6:
            continue
        owners = {
            int(chunk.split("=")[1].split(",")[0])
            for chunk in parts[5].split("pid")[1:]
            if chunk.startswith("=")
        }
        mine = owners & pids
        if mine:
            pid = min(mine)
            found.append({"address": parts[3], "pid": pid, "process": names.get(pid, "?")})
    return sorted(found, key=lambda x: (x["process"], x["address"]))


# -- the two targets -----------------------------------------------------------------------------


def _serve_plain(config_path: str, port: int) -> None:
    """The plain baseline (a child process): one uvicorn worker, the model in-process."""
    import uvicorn

    from raymlops.config import load_config
    from raymlops.predictor import load_predictor
    from raymlops.registry import Registry
    from raymlops.serving.api import LocalBackend, create_app
    from raymlops.storage import Storage

    config = load_config(config_path)
    registry = Registry(Storage.from_uri(config.storage, create=False), config.name)
    predictor = load_predictor(registry, "champion")
    app = create_app(
        name=config.name, schema=predictor.schema, serving=config.serving,
        backend=LocalBackend(predictor),
    )  # fmt: skip
    uvicorn.run(app, host="127.0.0.1", port=port, workers=1, log_level="warning", access_log=False)


@contextlib.contextmanager
def plain_server(config_path: Path, threads: int) -> Iterator[tuple[str, int]]:
    """The plain uvicorn process, up for the whole run: (base URL, pid). ``threads``: its
    OMP_NUM_THREADS (XGBoost's threads), 0 to leave it unset."""
    port = free_port()
    command = [
        sys.executable, str(Path(__file__).resolve()), "--_plain-server", str(config_path),
        str(port),
    ]  # fmt: skip
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    process = subprocess.Popen(command, cwd=ROOT, start_new_session=True, env=env)
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", 60, process)
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def serve_variants(args: argparse.Namespace, config: Any) -> list[tuple[str, Any]]:
    """(label, ProjectConfig) for each replicas x batching cell of the run."""
    base = config.serving
    updates: dict[str, Any] = {}
    if args.max_ongoing is not None:
        updates["max_ongoing_requests"] = args.max_ongoing
    if args.replica_cpus is not None:
        updates["replica_cpus"] = args.replica_cpus
    if args.batch_wait_ms is not None:
        updates["batch_wait_timeout_s"] = args.batch_wait_ms / 1000
    if args.prediction_log is not None:
        updates["prediction_log"] = base.prediction_log.model_copy(
            update={"enabled": args.prediction_log == "on"}
        )
    batch_on = args.max_batch_size if args.max_batch_size is not None else base.max_batch_size
    variants = []
    for replicas in args.replicas:
        for batching in args.batching:
            autoscaling = base.autoscaling.model_copy(
                update={"min_replicas": replicas, "max_replicas": replicas}
            )
            serving = base.model_copy(
                update={
                    **updates,
                    "autoscaling": autoscaling,
                    "max_batch_size": batch_on if batching == "on" else 1,
                }
            )
            label = f"serve r{replicas} batch {batching}"
            variants.append((label, config.model_copy(update={"serving": serving})))
    return variants


@contextlib.contextmanager
def ray_serve(env: dict[str, str]) -> Iterator[str]:
    """A local Ray (its own temp dir, no dashboard) with ``env``, and Serve on 127.0.0.1."""
    # a temp dir of our own: no other Ray session on the machine finds or joins this one
    ray_tmp = tempfile.mkdtemp(prefix="rmsb", dir="/tmp")
    env = dict(env)
    if env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
        # HAProxy's stats and Prometheus listeners bind every interface on fixed ports (8404,
        # 9101; no setting binds them to loopback) and its files default to /tmp/haproxy-serve:
        # free ports and files of our own
        env.setdefault("RAY_SERVE_HAPROXY_STATS_PORT", str(free_port()))
        env.setdefault("RAY_SERVE_HAPROXY_METRICS_PORT", str(free_port()))
        # the Python proxy stays up as HAProxy's fallback, on fixed ports 8500 / 9500
        env.setdefault("RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", str(free_port()))
        env.setdefault("RAY_SERVE_FALLBACK_PROXY_GRPC_PORT", str(free_port()))
        files = Path(ray_tmp) / "haproxy"
        files.mkdir()
        for key, name in (
            ("CONFIG_FILE_LOC", "haproxy.cfg"), ("SOCKET_PATH", "admin.sock"),
            ("SERVER_STATE_BASE", ""), ("SERVER_STATE_FILE", "server-state"),
            ("METRICS_SOCKET_PATH", "metrics.sock"),
        ):  # fmt: skip
            env.setdefault(f"RAY_SERVE_HAPROXY_{key}", str(files / name) if name else str(files))
    os.environ.pop("RAY_ADDRESS", None)
    os.environ.update(env)  # before Ray starts: its processes read these when they start
    import logging

    import ray
    from ray import serve

    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    port = free_port()
    try:
        ray.init(
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


def deploy(variant: Any, base: str) -> dict[str, Any]:
    """Deploy one variant as the app; how long it took, its settings, idle CPU, sockets."""
    from ray import serve

    from raymlops.serving.app import build_application

    started = time.perf_counter()
    serve.run(build_application(variant), name=NAME, route_prefix="/")
    try:
        wait_ready(base + "/readyz", 120)
    except RuntimeError as exc:
        status = serve.status().applications.get(NAME)
        raise RuntimeError(f"{exc}; Serve says: {status}") from None
    deploy_s = time.perf_counter() - started
    tick = os.sysconf("SC_CLK_TCK")
    _, ours0 = _cpu_jiffies(os.getpid())
    time.sleep(3)  # let it settle, and see what Ray costs with no traffic
    _, ours1 = _cpu_jiffies(os.getpid())
    s = variant.serving
    return {
        "deploy_s": round(deploy_s, 2),
        "idle_cores": round((ours1 - ours0) / tick / 3, 3),
        "serving": {
            "replicas": s.autoscaling.min_replicas,
            "max_batch_size": s.max_batch_size,
            "batch_wait_timeout_s": s.batch_wait_timeout_s,
            "max_ongoing_requests": s.max_ongoing_requests,
            "replica_cpus": s.replica_cpus,
        },
        "listening": listening(os.getpid()),
    }


def run_matrix(
    config_path: Path, bodies: dict[int, Path], args: argparse.Namespace, kind: str,
    workdir: Path, progress: Any,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
    """Every cell; with both targets, each Serve cell is paired with a plain cell run just
    before it, so that both see the same load from the rest of the machine."""
    from raymlops.config import load_config

    cells: list[dict[str, Any]] = []
    details: dict[str, Any] = {"variants": {}, "listening_plain": []}

    def one(target: str, base: str, rows: int, concurrency: int) -> dict[str, Any]:
        url = base + PREDICT
        cell = measure_cell(target, kind, url, bodies[rows], rows, concurrency, args, workdir)
        cells.append(cell)
        progress(cell)
        return cell

    with contextlib.ExitStack() as stack:
        plain = None
        if not args.no_plain:
            plain, plain_pid = stack.enter_context(plain_server(config_path, args.plain_threads))
            details["listening_plain"] = listening(plain_pid)
        if args.no_serve:
            assert plain is not None
            for rows in args.rows:
                check_predict(plain + PREDICT, bodies[rows], rows)
                for concurrency in args.concurrency:
                    for _ in range(args.repeat):
                        one("plain", plain, rows, concurrency)
            return cells, details
        base = stack.enter_context(ray_serve(args.ray_env))
        from ray import serve

        for label, variant in serve_variants(args, load_config(config_path)):
            details["variants"][label] = deploy(variant, base)
            for rows in args.rows:
                check_predict(base + PREDICT, bodies[rows], rows)
                for concurrency in args.concurrency:
                    for _ in range(args.repeat):
                        ref = one("plain", plain, rows, concurrency) if plain else None
                        cell = one(label, base, rows, concurrency)
                        if ref is not None:
                            ref["paired_with"] = label
                            cell["plain_rps"] = ref["rps"]
            serve.delete(NAME)
    return cells, details


# -- the report ----------------------------------------------------------------------------------


def medians(cells: list[dict[str, Any]], *, plain: bool) -> list[dict[str, Any]]:
    """The plain (or the Serve) cells of each (target, rows, concurrency) as one row of
    medians; a Serve row's ratio is the median of its pairs' ratios."""
    import statistics

    groups: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for cell in cells:
        if cell["target"].startswith("plain") == plain:
            key = ("plain" if plain else cell["target"], cell["rows"], cell["concurrency"])
            groups.setdefault(key, []).append(cell)
    out = []
    keys = ("rps", "rows_per_s", "p50_ms", "p99_ms", "cpu_ours", "cpu_others", "plain_rps")
    for (target, rows, concurrency), group in groups.items():
        row: dict[str, Any] = {"target": target, "rows": rows, "concurrency": concurrency}
        for key in keys:
            values = [c[key] for c in group if c.get(key) is not None]
            row[key] = statistics.median(values) if values else None
        ratios = [c["ratio"] for c in group if c.get("ratio") is not None]
        row["ratio"] = statistics.median(ratios) if ratios else None
        row["errors"] = sum(c["errors"] for c in group)
        row["runs"] = len(group)
        if len(group) > 1:
            row["target"] = f"{target} (median of {len(group)})"
        out.append(row)
    return out


def plain_medians(cells: list[dict[str, Any]]) -> dict[tuple[int, int], dict[str, Any]]:
    return {(r["rows"], r["concurrency"]): r for r in medians(cells, plain=True)}


def add_ratios(cells: list[dict[str, Any]], earlier_plain: list[dict[str, Any]]) -> None:
    """Serve / plain requests/s: against the paired plain cell, else an earlier run's median."""
    medians = plain_medians(earlier_plain)
    for cell in cells:
        if cell["target"].startswith("plain"):
            continue
        ref = cell.get("plain_rps")
        if ref is None and (cell["rows"], cell["concurrency"]) in medians:
            ref = medians[(cell["rows"], cell["concurrency"])]["rps"]
            cell["plain_rps"] = ref
        cell["ratio"] = cell["rps"] / ref if ref else None


def check_goals(cells: list[dict[str, Any]], top: int) -> list[dict[str, Any]]:
    """Per request size with a goal: the best Serve variant at the top concurrency."""
    goals = []
    for rows, goal in GOALS.items():
        serve_cells = [
            c for c in cells
            if not c["target"].startswith("plain") and c["rows"] == rows
            and c["concurrency"] == top and c.get("ratio") is not None
        ]  # fmt: skip
        if not serve_cells:
            continue
        best = max(serve_cells, key=lambda c: c["ratio"])
        goals.append(
            {"rows": rows, "concurrency": top, "goal": goal, "best": best["target"],
             "ratio": best["ratio"], "met": best["ratio"] >= goal}
        )  # fmt: skip
    return goals


def summary_rows(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the table and the plot show: medians of plain and of each Serve variant."""
    rows = medians(cells, plain=True) + medians(cells, plain=False)
    return sorted(
        rows, key=lambda c: (c["rows"], c["concurrency"], not c["target"].startswith("plain"))
    )


def render(rows: list[dict[str, Any]], goals: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    columns = (
        "target", "rows", "conc", "rps", "rows/s", "p50 ms", "p99 ms", "err",
        "plain rps", "x plain", "cores ours", "cores others",
    )  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "target" else "right", no_wrap=True)
    for c in rows:
        ratio = c.get("ratio")
        table.add_row(
            c["target"], str(c["rows"]), str(c["concurrency"]), f"{c['rps']:.0f}",
            f"{c['rows_per_s']:.0f}", f"{c['p50_ms']:.1f}", f"{c['p99_ms']:.1f}",
            str(c["errors"]) if c["errors"] else "",
            f"{c['plain_rps']:.0f}" if c.get("plain_rps") else "",
            "" if ratio is None else f"{ratio:.2f}x",
            f"{c.get('cpu_ours') or 0:.2f}", f"{c.get('cpu_others') or 0:.2f}",
        )  # fmt: skip
    console = Console(width=max(140, Console().width))
    console.print(table)
    console.print(
        "x plain: Serve rps / the plain rps measured just before it (same rows and connections; "
        "the median of the pairs with --repeat). cores: CPU used during the cell by our "
        "processes (servers, Ray, load generator) and by everything else on the machine.",
        style="dim",
    )
    for g in goals:
        mark = "[green]met[/]" if g["met"] else "[red]missed[/]"
        console.print(
            f"goal c{g['concurrency']} {g['rows']}-row: >= {g['goal']:.1f}x plain -> best "
            f"{g['ratio']:.2f}x ({g['best']}) {mark}"
        )


def plot(cells: list[dict[str, Any]], path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    groups = sorted({(c["rows"], c["concurrency"]) for c in cells})
    targets = [c["target"] for c in cells if not c["target"].startswith("plain")]
    targets = list(dict.fromkeys(targets))
    by = {(c["target"], c["rows"], c["concurrency"]): c for c in cells}
    plain = {(c["rows"], c["concurrency"]): c for c in cells if c["target"].startswith("plain")}
    names = ["plain", *targets]
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups) + 1, 4), squeeze=False)
    for ax, (rows, conc) in zip(axes[0], groups, strict=True):
        found = [plain.get((rows, conc), {})] + [by.get((t, rows, conc), {}) for t in targets]
        values = [c.get("rows_per_s", 0.0) for c in found]
        bars = ax.bar(range(len(names)), values, color=["#777"] + ["#3a7"] * len(targets))
        for bar, cell in zip(bars[1:], found[1:], strict=True):
            if cell.get("ratio") is not None:
                ax.annotate(f"{cell['ratio']:.2f}x",
                            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=7)  # fmt: skip
        ax.set_xticks(range(len(names)), [n.replace("serve ", "") for n in names], rotation=60,
                      fontsize=7)  # fmt: skip
        ax.set_title(f"{rows} row(s), c{conc}", fontsize=9)
        ax.set_ylabel("rows/s")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--_plain-server":
        _serve_plain(argv[1], int(argv[2]))
        return 0
    if argv and argv[0] == "--_loadgen":
        _python_loadgen(argv[1], argv[2], int(argv[3]), float(argv[4]))
        return 0
    args = parse_args(argv)
    kind = pick_loadgen(args.loadgen)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="raymlops-serving-"))

    def progress(cell: dict[str, Any]) -> None:
        print(
            f"  {cell['target']:<20} rows {cell['rows']:>3} c{cell['concurrency']:<3} "
            f"{cell['rps']:>7.0f} rps {cell['rows_per_s']:>8.0f} rows/s p50 "
            f"{cell['p50_ms']:6.1f} ms p99 {cell['p99_ms']:7.1f} ms  cores ours "
            f"{cell['cpu_ours']:.2f} others {cell['cpu_others']:.2f}"
            + (f"  errors {cell['errors']}" if cell["errors"] else ""),
            flush=True,
        )

    earlier: list[dict[str, Any]] = []
    if args.no_plain and args.plain_from is not None:
        earlier = json.loads(args.plain_from.read_text(encoding="utf-8"))["cells"]
    try:
        print(f"preparing the model in {workdir} (load generator: {kind})", flush=True)
        config_path = prepare_project(workdir, args.seed)
        bodies = write_bodies(workdir, args.rows, args.seed)
        env = " ".join(f"{k}={v}" for k, v in args.ray_env.items()) or "no env vars"
        print(f"Ray Serve env: {env}", flush=True)
        cells, details = run_matrix(config_path, bodies, args, kind, workdir, progress)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    add_ratios(cells, earlier)
    title = f"serving: {args.label or args.preset} ({kind}, {args.duration:g}s/cell)"
    shown = summary_rows(cells + [c for c in earlier if c["target"] == "plain"])
    goals = check_goals(shown, max(args.concurrency))
    render(shown, goals, title)
    noisy = [c for c in cells if (c.get("cpu_others") or 0) > 0.3]
    if noisy:
        print(
            f"note: {len(noisy)} of {len(cells)} cells ran while the rest of the machine used "
            "over 0.3 cores: their numbers are noisy (see cpu_others in the JSON)"
        )

    import ray

    result = {
        "label": args.label,
        "preset": args.preset,
        "ray_env": args.ray_env,
        "argv": argv,
        "loadgen": kind,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "plain_from": str(args.plain_from) if earlier else None,
        "cells": cells,
        "summary": shown,
        "goals": goals,
        "listening_plain": details["listening_plain"],
        "serve_variants": details["variants"],
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "ray": ray.__version__,
            "load_average_before": round(load_before, 2),
        },
        "wall_s": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"wrote {args.out} ({result['wall_s']:.0f}s)")
    png = args.out.with_suffix(".png")
    if plot(shown, png, title):
        print(f"wrote {png}")
    else:
        print("matplotlib is not installed: skipped the plot")
    return 0 if all(g["met"] for g in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
