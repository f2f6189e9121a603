"""``raymlops demo``: the whole loop as a new user runs it, each stage in order, from nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.loop import STAGES  # the demo's stages, in order


@pytest.mark.slow
def test_demo_closes_the_loop(tmp_path: Path) -> None:
    """``raymlops demo`` as a user runs it, through the loop benchmark (which times the same
    CLI run against its goals, so CI runs the demo once for both)."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "COLUMNS": "200", "RAY_ADDRESS": ""}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    bench = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--suite", "loop", "--quick", "--out", str(tmp_path)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    folder = tmp_path / "loop-demo"
    log = (folder / "demo.log").read_text() if (folder / "demo.log").exists() else ""
    assert bench.returncode == 0, bench.stderr[-2000:] + log[-4000:]
    stderr = log.split("--- stderr\n", 1)[1]
    stdout = log.split("--- stdout\n", 1)[1].split("--- stderr\n", 1)[0]
    workdir = folder / "project"

    finished = [m.group(1) for m in re.finditer(r"^✓ (.+?) \(\d+\.\ds\)", stderr, re.MULTILINE)]
    assert [s for s in finished if s in STAGES] == STAGES, finished
    windows = [
        (int(n), verdict)
        for n, verdict in re.findall(r"window\s+(\d+) \(v1\): drift share [\d.]+ (\w+)", stderr)
    ]
    assert windows[:3] == [(1, "ok"), (2, "ok"), (3, "ok")], "normal traffic: no drift"
    assert [v for _, v in windows].count("retrain") == 1, windows
    assert "Serve answers with v2" in stdout

    # the loop benchmark's figures: every stage timed next to its goal, the check passed
    [result_path] = tmp_path.glob("loop-*.json")
    result = json.loads(result_path.read_text())
    assert result["passed"] is True, result["checks"]
    timed = {f["cell"] for f in result["figures"] if f["side"] == "raymlops"}
    assert timed == {*STAGES, "whole loop"}
    assert all(f["value"] > 0 for f in result["figures"])
    assert result_path.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"

    store = workdir / ".raymlops"
    aliases = json.loads((store / "models" / "churn" / "aliases.json").read_text())
    assert aliases["champion"] == "v2"
    lineage = json.loads((store / "models" / "churn" / "versions" / "v2" / "lineage.json").read_text())
    assert lineage["retrain"]["parent_version"] == "v1"
    assert Path(lineage["retrain"]["trigger_report"]).is_file(), "the triggering Evidently report"
    state = json.loads((store / "monitoring" / "churn" / "state.json").read_text())
    assert [job["status"] for job in state["jobs"]] == ["SUCCEEDED"]
    assert lineage["retrain"]["submission_id"] == state["jobs"][0]["submission_id"]
    assert (store / "reports" / "churn" / "workspace").is_dir(), "evidently ui --workspace DIR"
