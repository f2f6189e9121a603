"""Serve's HAProxy ingress stays on loopback in a local Ray that raymlops starts.

Ray 2.60's HAProxy config template binds its stats page and Prometheus exporter to every
interface; raymlops's worker hook rewrites those binds to 127.0.0.1 when the HAProxy manager
imports the template. These tests run Ray's own template through the hook and HAProxy's own
config check, so a Ray upgrade that changes the template fails here, not on the network.
(tests/e2e/test_network.py lists the sockets of a real `raymlops serve`.)
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from raymlops.raystart import loopback_haproxy_template
from raymlops.runtime import haproxy_folder, haproxy_installed, haproxy_ray_env
from tests.helpers import wait_for_condition

REPO = Path(__file__).parents[2]

# in a fresh interpreter, as a Ray worker: the hook first, then Serve imports the template
_WORKER = """
import json, subprocess, sys, tempfile
from raymlops.raystart import loopback_worker
loopback_worker()
serve_imported = "ray.serve" in sys.modules
from ray.serve._private import haproxy
from ray.serve.config import HTTPOptions
d = tempfile.mkdtemp()
cfg = haproxy.HAProxyConfig(
    http_options=HTTPOptions(host="127.0.0.1", port=18000), socket_path=d + "/admin.sock",
    server_state_base=d, server_state_file=d + "/state", metrics_socket_path=d + "/m.sock",
    log_target=d + "/log.sock",
)
api = haproxy.HAProxyApi(cfg=cfg, config_file_path=d + "/haproxy.cfg")
api._generate_config_file_internal()  # what the HAProxy manager actor runs
text = open(d + "/haproxy.cfg").read()
check = subprocess.run([haproxy.get_haproxy_binary(), "-c", "-f", d + "/haproxy.cfg"],
                       capture_output=True, text=True)
print("RESULT " + json.dumps({
    "serve_imported_by_hook": serve_imported,
    "binds": [l.strip() for l in text.splitlines() if l.strip().startswith("bind ")],
    "check": check.returncode, "check_output": check.stdout + check.stderr,
    "config": text, "binary": haproxy.get_haproxy_binary(),
}))
"""


_NO_HAPROXY = "no HAProxy binary (ray[serve] on Linux has one)"


@pytest.fixture(scope="module")
def rendered() -> dict:
    """Ray's real template, rendered by Ray's real code in a fresh worker after the hook."""
    if not haproxy_installed():
        pytest.skip(_NO_HAPROXY)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", _WORKER], capture_output=True, text=True, env=env, timeout=120
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line is not None, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(line.split(" ", 1)[1])


def test_rays_haproxy_config_binds_loopback_only_after_the_worker_hook(rendered: dict) -> None:
    """Ray's real template, rendered by Ray's real code after the hook: every listener on
    127.0.0.1, and HAProxy accepts the config. Fails when a Ray upgrade changes the template
    so that the rewrite no longer applies (or the hook no longer reaches it)."""
    result = rendered
    assert not result["serve_imported_by_hook"], "the hook must not import Serve in every worker"
    assert result["check"] == 0, result["check_output"]
    binds = result["binds"]
    # the HTTP frontend, the stats page and the Prometheus exporter (no gRPC frontend here)
    assert len(binds) == 3, binds
    assert all(b.startswith("bind 127.0.0.1:") for b in binds), binds


def test_the_rewrite_keeps_the_configured_frontend_host_and_refuses_what_it_cannot_fix() -> None:
    template = (
        "frontend prometheus\n    bind :{{ config.metrics_port }}\n"
        "frontend http_frontend\n    bind {{ config.frontend_host }}:{{ config.frontend_port }}\n"
        "frontend grpc_frontend\n"
        "    bind {{ config.grpc_frontend_host }}:{{ config.grpc_frontend_port }} proto h2\n"
        "listen stats\n  bind *:{{ config.stats_port }}\n"
        "listen other\n  bind 0.0.0.0:{{ config.x }}\n  bind [::]:{{ config.y }}\n"
    )
    patched = loopback_haproxy_template(template)
    binds = re.findall(r"^\s*bind (\S+)", patched, re.MULTILINE)
    assert binds == [
        "127.0.0.1:{{",
        "{{",
        "{{",
        "127.0.0.1:{{",
        "127.0.0.1:{{",
        "127.0.0.1:{{",
    ], patched
    # a cluster that configures http_options.host keeps it (Ray renders it into frontend_host)
    assert "bind {{ config.frontend_host }}:{{ config.frontend_port }}" in patched
    assert loopback_haproxy_template(patched) == patched, "applies once, and again harmlessly"
    for unfixable in ("listen x\n  bind 0.0.0.0:8404\n", "listen x\n  bind ipv4@:{{ p }}\n"):
        with pytest.raises(ValueError, match="RAY_SERVE_ENABLE_HA_PROXY=0"):
            loopback_haproxy_template(unfixable)


def test_each_local_ray_gets_its_own_haproxy_ports_and_private_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray fixes HAProxy's stats/metrics ports and the fallback proxy's, and keeps its files
    (an admin socket with `level admin`) in /tmp/haproxy-serve: two Rays on one machine would
    collide, and another user could reach the admin socket."""
    for key in list(os.environ):
        if key.startswith(("RAY_SERVE_HAPROXY_", "RAY_SERVE_FALLBACK_PROXY_")):
            monkeypatch.delenv(key)
    monkeypatch.delenv("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", raising=False)
    files = tmp_path / "hap"
    first, second = haproxy_ray_env(str(files)), haproxy_ray_env(str(files))
    ports = [k for k in first if k.endswith("_PORT")]
    assert len(ports) == 4
    assert len({first[k] for k in ports}) == 4, first
    assert {first[k] for k in ports} != {second[k] for k in ports}
    assert stat.S_IMODE(files.stat().st_mode) == 0o700
    for key in ("CONFIG_FILE_LOC", "SOCKET_PATH", "SERVER_STATE_FILE", "METRICS_SOCKET_PATH"):
        assert Path(first[f"RAY_SERVE_HAPROXY_{key}"]).parent == files, key
    # the access log goes to a Unix socket: UDP to 127.0.0.1:514 sends from 0.0.0.0
    assert first["RAY_SERVE_HAPROXY_LOG_TARGET"].startswith(str(files))
    monkeypatch.setenv("RAY_SERVE_HAPROXY_STATS_PORT", "18404")
    assert "RAY_SERVE_HAPROXY_STATS_PORT" not in haproxy_ray_env(str(files)), "yours wins"


def test_the_default_folder_keeps_haproxys_socket_paths_short(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HAProxy refuses a socket path over 97 bytes (`stats socket ... too long (max 97)`), and
    Ray adds the node id (56 hex digits) and the socket's name to the folder."""
    monkeypatch.setenv("RAY_TMPDIR", "/tmp/" + "x" * 60)
    folder = haproxy_folder()
    assert folder == f"/tmp/raymlops-hap-{os.getuid()}"
    assert len(f"{folder}/{'0' * 56}/metrics.sock") <= 97


def test_haproxy_answers_503_with_retry_after_while_no_replica_is_up(
    rendered: dict, tmp_path: Path
) -> None:
    """Ray 2.60's template turns HAProxy's own 503 (no server: no ingress replica is up) into
    a fixed 500 page; after the hook it is a 503 with Retry-After and the API's error body.
    Real HAProxy, with the global and defaults sections Ray rendered, in front of a backend
    with no server (what Ray's backend holds before its first replica is up)."""
    import httpx

    config = rendered["config"]
    assert "errorfile 503" not in config, "Ray's 500 page for HAProxy's own 503 is replaced"
    assert "errorfile 502" in config, "a replica failing mid-request stays Ray's 500"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    head = config[: config.index("\nfrontend ")]
    (tmp_path / "probe.cfg").write_text(
        f"{head}\nfrontend probe\n    bind 127.0.0.1:{port}\n    default_backend empty\n"
        "backend empty\n",
        encoding="utf-8",
    )
    server = subprocess.Popen(
        [rendered["binary"], "-db", "-f", str(tmp_path / "probe.cfg")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        def answer() -> httpx.Response | None:
            assert server.poll() is None, server.communicate()[0][-2000:]
            try:
                return httpx.post(f"http://127.0.0.1:{port}/v1/models/m:predict", timeout=5)
            except httpx.TransportError:
                return None  # not listening yet

        response = wait_for_condition(answer, timeout_s=20, message="HAProxy listening")
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == 503
    finally:
        server.terminate()
        server.wait(10)
