"""Loop suite: the demo's closed loop, stage by stage, against the project's goals.

There is no baseline a user would run instead of the whole loop (train, serve, watch drift,
retrain in a Ray job, gate, swap); the suite times ``raymlops demo`` exactly as a user runs it
(the CLI, in a child process, with ``--json`` for the stage times) and sets each stage beside
its goal for a 2-core laptop. The demo's own sizes are fixed, so every mode runs the same loop.

The check: the demo exited 0, finished all six stages, and Serve answered with the retrained
version at the end. Its output is kept in ``<out>/loop-demo/demo.log`` and its project in
``<out>/loop-demo/`` (``tests/e2e/test_demo.py`` runs this suite and reads both).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.report import Check, Figure, SuiteResult

__all__ = ["GOALS_S", "STAGES", "run"]

#: the demo's stages, in order
STAGES = [
    "train the champion",
    "serve it, with the drift monitor",
    "normal traffic",
    "drifted traffic",
    "retrain job, gate, promotion",
    "serving swaps to the new version",
]
#: goals on 2 cores, in seconds: a stage (or the whole loop) that takes longer is a regression
#: to look at. "normal traffic" waits for three monitoring windows, so its goal is theirs.
GOALS_S = {
    "train the champion": 60.0,
    "serve it, with the drift monitor": 30.0,
    "normal traffic": 45.0,
    "drifted traffic": 60.0,
    "retrain job, gate, promotion": 90.0,
    "serving swaps to the new version": 15.0,
    "whole loop": 240.0,
}
#: the folder under --out that keeps the demo's project, output and JSON
DEMO_DIR = "loop-demo"


def run(mode: str, address: str | None = None, out: Path | None = None) -> SuiteResult:
    folder = (out or Path.cwd() / "benchmarks" / "results") / DEMO_DIR
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    cli = shutil.which("raymlops", path=str(Path(sys.executable).parent)) or "raymlops"
    command = [
        cli,
        "demo",
        "--workdir",
        str(folder / "project"),
        "--json",
        str(folder / "demo.json"),
    ]
    command += ["--address", address] if address else []
    env = {**os.environ, "COLUMNS": "200"}
    if not address:
        env["RAY_ADDRESS"] = ""  # a local Ray of the demo's own
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=900, env=env, check=False
    )
    (folder / "demo.log").write_text(
        f"$ {' '.join(command)}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}",
        encoding="utf-8",
    )
    outcome = (
        json.loads((folder / "demo.json").read_text(encoding="utf-8"))
        if done.returncode == 0 and (folder / "demo.json").exists()
        else {"stages": {}, "seconds": 0.0, "served_version": "", "champion_before": ""}
    )
    stages = {**outcome["stages"], "whole loop": outcome["seconds"]}
    finished = [s for s in STAGES if s in stages]
    swapped = bool(outcome["served_version"]) and (
        outcome["served_version"] != outcome["champion_before"]
    )
    check = Check(
        "loop: the demo closed the loop",
        done.returncode == 0 and finished == STAGES and swapped,
        f"exit {done.returncode}; {len(finished)} of {len(STAGES)} stages finished; Serve answered "
        f"with {outcome['served_version'] or '-'} after {outcome['champion_before'] or '-'}; "
        f"output in {folder / 'demo.log'}",
    )
    figures, table = [], []
    for stage, goal in GOALS_S.items():
        seconds = stages.get(stage)
        if seconds is None:
            continue
        figures += [
            Figure(stage, "raymlops", "raymlops demo", "seconds", seconds, "s"),
            Figure(stage, "goal", "goal (2 cores)", "seconds", goal, "s"),
        ]
        table.append(
            {
                "stage": stage,
                "seconds": f"{seconds:.1f}",
                "goal s": f"{goal:.0f}",
                "within goal": "yes" if seconds <= goal else "**no**",
            }
        )
    missed = [row["stage"] for row in table if row["within goal"] != "yes"]
    return SuiteResult(
        suite="loop",
        title=f"The closed loop (raymlops demo) against its goals ({mode})",
        figures=figures,
        checks=[check],
        table=table,
        headline=(
            f"the loop closed in {outcome['seconds']:.0f} s (goal {GOALS_S['whole loop']:.0f} s); "
            + (f"over goal: {', '.join(missed)}" if missed else "every stage within its goal")
        ),
        notes=[
            "No baseline: nothing a user runs instead does the whole loop; the goals are the "
            "project's own for a 2-core laptop.",
            "normal traffic and drifted traffic wait for the monitor's windows (the demo's "
            "window and poll settings), so they measure the monitor's reaction time.",
        ],
        extra={"demo": outcome, "exit": done.returncode, "folder": str(folder)},
    )
