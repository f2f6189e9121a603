"""The whole loop through the installed CLI, as a user runs it: init -> train -> show -> verify."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

JOBS = Path(__file__).parents[2] / "jobs"
RAYMLOPS = shutil.which("raymlops", path=str(Path(sys.executable).parent)) or "raymlops"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(condition, server: subprocess.Popen[str], timeout_s: float = 120) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and server.poll() is None:
        if condition():
            return True
        time.sleep(0.5)
    return False


def run(
    *args: str, cwd: Path, columns: int = 160, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns), "RAY_ADDRESS": "", **(env or {})}
    return subprocess.run(
        [RAYMLOPS, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )


@pytest.mark.slow
def test_init_train_promote_show_verify(tmp_path: Path) -> None:
    init = run("init", "project", cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    config = "project/raymlops.yaml"

    # an 80-column terminal, the narrowest common one (the most wrapped lines)
    logs = tmp_path / "logs"
    first = run(
        "train",
        "--config",
        config,
        "--promote",
        cwd=tmp_path,
        columns=80,
        env={"RAYMLOPS_LOG_DIR": str(logs)},
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert "churn v1 registered and promoted to champion" in first.stdout
    assert "Tune trials" in first.stdout
    for stage in ("read and validate data", "search (Ray Tune)", "register version"):
        assert stage in first.stderr, f"progress shows the stage {stage!r}"
    printed = first.stdout.splitlines() + first.stderr.splitlines()
    assert len(printed) < 40, f"train is quiet by default ({len(printed)} lines):\n" + "\n".join(
        printed
    )
    named = [line for line in first.stdout.splitlines() if line.startswith("Ray's output: ")]
    assert named, "the summary names the log file of Ray's output"
    log = Path(named[0].removeprefix("Ray's output: ").split()[0])
    assert log.parent == logs, f"{log} is in RAYMLOPS_LOG_DIR"
    assert log.is_file(), f"{log} exists"
    ray_lines = log.read_text()
    assert "Starting execution of Dataset" in ray_lines, "Ray Data's lines are in the log"
    assert "Trial status" in ray_lines, "Tune's lines are in the log"
    assert "INFO" not in first.stdout + first.stderr, "no Ray INFO line on the terminal"

    show = run("registry", "show", "--config", config, "champion", cwd=tmp_path)
    assert show.returncode == 0, show.stderr
    assert "churn v1  (champion)" in show.stdout
    assert "no champion yet" in show.stdout

    verify = run("registry", "verify", "--config", config, cwd=tmp_path)
    assert verify.returncode == 0
    assert "v1: 11 files match the manifest" in verify.stdout

    # serve the champion over HTTP, answer one request, stop cleanly on Ctrl-C
    port = _free_port()
    (tmp_path / "project" / "raymlops.yaml").write_text(
        (tmp_path / "project" / "raymlops.yaml").read_text() + f"serving: {{port: {port}}}\n"
    )
    server = subprocess.Popen(
        [RAYMLOPS, "serve", "--config", config],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "160", "RAY_ADDRESS": ""},
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(server.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        url = f"http://127.0.0.1:{port}"
        assert _wait_for(
            lambda: any("Ctrl-C to stop" in line for line in lines), server, timeout_s=300
        ), "the banner was printed"
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
        row = json.loads(
            pd.read_csv(tmp_path / "project" / "data" / "train.csv")
            .drop(columns=["churned"])
            .head(1)
            .to_json(orient="records")
        )
        answer = httpx.post(f"{url}/v1/models/churn:predict", json={"instances": row}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_version"] == "v1"
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=90)
        except subprocess.TimeoutExpired:
            server.kill()  # never leave a server behind; the assertion below reports it
            server.wait(timeout=30)
        reader.join(timeout=10)
    output = "".join(lines)
    assert server.returncode == 0, output[-2000:]
    assert "stopping ..." in output
    # Ctrl-C stops Serve quietly: no replica's shutdown error on the terminal (issue 14)
    assert "graceful_shutdown" not in output, output[-2000:]
    assert "ray.kill" not in output, output[-2000:]
    assert f"serving churn (champion) at http://127.0.0.1:{port}" in output
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)

    # a broken copy of the data: the run fails naming the column and rows, nothing is added
    data = pd.read_csv(tmp_path / "project" / "data" / "train.csv")
    data["support_calls"] = data["support_calls"].astype(object)
    data.loc[[3, 4], "support_calls"] = "many"
    data.to_csv(tmp_path / "project" / "data" / "train.csv", index=False)
    # through the Ray job entry point, which is the same code path as `raymlops train`
    broken = subprocess.run(
        [sys.executable, str(JOBS / "train.py"), "--config", config, "--promote"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "COLUMNS": "160", "RAY_ADDRESS": ""},
    )
    assert broken.returncode == 3
    assert "column 'support_calls': wrong type in 2 row(s)" in broken.stderr
    assert "row 4: 'many'" in broken.stderr
    listing = run("registry", "list", "--config", config, cwd=tmp_path)
    assert listing.stdout.count("churn") >= 1
    assert " v2 " not in listing.stdout

    # tampering with the champion's model file is caught before any load
    model = (
        tmp_path / "project" / ".raymlops" / "models" / "churn" / "versions" / "v1" / "model.ubj"
    )
    if not model.exists():
        model = model.with_name("model.skops")
    model.write_bytes(model.read_bytes()[:-1] + b"\x00")
    tampered = run("registry", "verify", "--config", config, cwd=tmp_path)
    assert tampered.returncode == 4
    assert "does not match its sha256" in tampered.stdout


def test_python_dash_m_runs_the_same_cli(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "raymlops", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0
    for command in ("train", "registry", "init", "config", "demo"):
        assert command in done.stdout
