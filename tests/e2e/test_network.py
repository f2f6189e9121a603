"""Nothing a local raymlops starts listens beyond loopback (issue 12, "Network").

`raymlops serve` (with the monitor, as a user runs it, on its default HAProxy ingress) and
`raymlops cluster up` run as subprocesses; every listening TCP socket and bound UDP socket of their whole process tree
(found with ``ss -ltnup`` and ``/proc``) must be on 127.0.0.0/8 or ::1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from raymlops.config import load_config
from raymlops.examples import make_churn
from raymlops.loopback import is_loopback_host
from raymlops.pipeline import open_registry
from raymlops.schema import Schema
from tests.conftest import write_project
from tests.helpers import register_model, wait_for_condition
from tests.sockets import listeners, process_tree

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("ss") is None or not Path("/proc").is_dir(), reason="Linux"),
]
REPO = Path(__file__).parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    # a HOME of its own: a token file Ray would write there (~/.ray/auth_token) is checked too
    env.update(
        RAYMLOPS_HOME=str(home), HOME=str(home / "user"), PYTHONPATH=str(REPO), COLUMNS="200"
    )
    return env


def _token_files_are_private(home: Path) -> None:
    tokens = [p for p in home.rglob("*token*") if p.is_file()]
    assert tokens, "the local Ray runs with token authentication"
    for path in tokens:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"


def _open_to_the_network(pids: set[int]) -> list[str]:
    return [str(s) for s in listeners(process_tree(pids)) if not is_loopback_host(s.address)]


def test_serve_with_monitor_listens_on_loopback_only(tmp_path: Path) -> None:
    port = _free_port()
    config_path = write_project(tmp_path, extra=f"serving: {{port: {port}}}\n")
    config = load_config(config_path)
    registry = open_registry(config)
    registry.promote(register_model(registry, make_churn(400, seed=2), Schema.from_config(config)))

    server = subprocess.Popen(
        [sys.executable, "-m", "raymlops", "serve", "--config", str(config_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(tmp_path / "home"),
        start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(server.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        wait_for_condition(
            lambda: server.poll() is not None or any("Ctrl-C to stop" in x for x in lines),
            timeout_s=300,
            interval_s=0.5,
            message="raymlops serve to start",
        )
        assert server.poll() is None, "".join(lines)[-3000:]
        # a prediction crosses every hop (proxy -> model replica over gRPC), so a server moved
        # to loopback still answers
        rows = make_churn(3, seed=5).drop(columns=["churned"])
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/models/churn:predict",
            json={"instances": json.loads(rows.to_json(orient="records", date_format="iso"))},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"]) == 3
        # the metrics address it prints is where raymlops's metrics are scraped
        metrics = re.findall(r"metrics +(http://\S+/metrics)", "".join(lines))
        assert metrics, "raymlops serve prints its metrics address:\n" + "".join(lines)
        assert metrics[0].startswith("http://127.0.0.1:"), metrics
        wait_for_condition(
            lambda: "ray_raymlops_requests" in httpx.get(metrics[0], timeout=10).text,
            timeout_s=60,
            interval_s=1.0,
            message=f"raymlops's request counter at {metrics[0]}",
        )
        tree = listeners(process_tree({server.pid}))
        assert len(tree) >= 5, f"too few sockets found to be the whole tree: {tree}"
        # the default ingress: HAProxy on the HTTP port (and its stats page and Prometheus
        # exporter, which Ray's template binds everywhere unless raymlops's hook ran)
        haproxy = [s for s in tree if s.process == "haproxy"]
        assert any(s.port == port for s in haproxy), f"HAProxy serves port {port}: {tree}"
        assert len(haproxy) >= 3, haproxy
        open_sockets = _open_to_the_network({server.pid})
        assert not open_sockets, "listening beyond loopback:\n" + "\n".join(open_sockets)
        _token_files_are_private(tmp_path / "home")
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)  # its own session: only what it started
            server.wait(timeout=30)


def test_cluster_up_listens_on_loopback_only(tmp_path: Path) -> None:
    from raymlops import cluster

    env = _env(tmp_path / "home")
    up = subprocess.run(
        [sys.executable, "-m", "raymlops", "cluster", "up", "--workers", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        state = cluster.ClusterState.load(tmp_path / "home")
        assert state is not None
        pids = {n.pid for n in state.nodes}
        tree = listeners(process_tree(pids))
        assert len(tree) >= 5, f"too few sockets found to be the whole tree: {tree}"
        open_sockets = _open_to_the_network(pids)
        assert not open_sockets, "listening beyond loopback:\n" + "\n".join(open_sockets)
        token = Path(state.token_path)
        assert token.stat().st_mode & 0o777 == 0o600
    finally:
        down = subprocess.run(
            [sys.executable, "-m", "raymlops", "cluster", "down"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert down.returncode == 0, down.stdout + down.stderr
