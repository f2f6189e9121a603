"""``raymlops demo``: the whole loop as a new user runs it, each stage in order, from nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

RAYMLOPS = shutil.which("raymlops", path=str(Path(sys.executable).parent)) or "raymlops"
STAGES = [
    "train the champion",
    "serve it, with the drift monitor",
    "normal traffic",
    "drifted traffic",
    "retrain job, gate, promotion",
    "serving swaps to the new version",
]


@pytest.mark.slow
def test_demo_closes_the_loop(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    run = subprocess.run(
        [RAYMLOPS, "demo", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=480,
        env={**os.environ, "COLUMNS": "200", "RAY_ADDRESS": ""},
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]

    finished = [m.group(1) for m in re.finditer(r"^✓ (.+?) \(\d+\.\ds\)", run.stderr, re.MULTILINE)]
    assert [s for s in finished if s in STAGES] == STAGES, finished
    windows = [
        (int(n), verdict)
        for n, verdict in re.findall(r"window\s+(\d+) \(v1\): drift share [\d.]+ (\w+)", run.stderr)
    ]
    assert windows[:3] == [(1, "ok"), (2, "ok"), (3, "ok")], "normal traffic: no drift"
    assert [v for _, v in windows].count("retrain") == 1, windows
    assert "Serve answers with v2" in run.stdout

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
