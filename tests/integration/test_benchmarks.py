"""The benchmark suites run (quick mode) and write what they promise; never how fast anything is.

Each existing suite runs as ``python -m benchmarks --quick --suite <name>`` in a child process
with a Ray of its own, and its JSON must hold figures for both sides with one unit per metric,
passed correctness checks, and a markdown table and a PNG plot next to it. The bad-input
cases (exit 2) and a failed check (exit 1) are decided before Ray starts:
tests/unit/test_bench_usage.py.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import SUITES, available, writes_suite_result

ROOT = Path(__file__).resolve().parents[2]
EXISTING = [s for s in SUITES if available(s)]
#: the loop suite runs the whole demo (minutes): tests/e2e/test_demo.py runs it, and checks
#: the demo through it, instead of running the demo twice in CI; the tune suite runs with
#: --address on the local multi-node cluster (tests/integration/test_cluster.py), which checks
#: its files with check_quick_result too (joining that cluster costs less than a Ray's start)
COMMON_FORMAT = [s for s in EXISTING if writes_suite_result(s) and s not in ("loop", "tune")]


def bench(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    child_env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a Ray of its own
    child_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), child_env.get("PYTHONPATH")])
    )
    child_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=ROOT, env=child_env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("suite", COMMON_FORMAT)
def test_quick_suite_writes_both_sides_checks_table_and_plot(suite: str, tmp_path: Path) -> None:
    done = bench("--quick", "--suite", suite, "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    check_quick_result(suite, tmp_path)


def check_quick_result(suite: str, out: Path) -> dict:
    """The suite's JSON in ``out``: both sides, one unit per metric, checks passed, a table and
    a plot; returns it."""
    [path] = out.glob(f"{suite}-*.json")
    result = json.loads(path.read_text(encoding="utf-8"))
    assert result["suite"] == suite
    assert result["mode"] == "quick"
    figures = result["figures"]
    assert figures, "no figures"
    assert {f["side"] for f in figures} == {"raymlops", "baseline"}
    for f in figures:
        assert math.isfinite(f["value"]), f
        assert f["value"] > 0, f
    units: dict[str, set[str]] = {}
    for f in figures:
        units.setdefault(f["metric"], set()).add(f["unit"])
    assert all(len(u) == 1 for u in units.values()), units
    # every cell was measured on both sides
    sides: dict[str, set[str]] = {}
    for f in figures:
        sides.setdefault(f["cell"], set()).add(f["side"])
    assert all(s == {"raymlops", "baseline"} for s in sides.values()), sides

    assert result["checks"], "no correctness check ran"
    assert all(c["passed"] for c in result["checks"]), result["checks"]
    assert result["passed"] is True
    machine = result["machine"]
    assert machine["cores"] >= 1
    assert machine["packages"]["ray"]
    assert machine["load_average_before"]

    table = path.with_suffix(".md").read_text(encoding="utf-8")
    assert "| " in table
    assert result["headline"] in table
    assert path.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if suite == "serving":  # both schemas were checked and timed
        assert {c["name"] for c in result["checks"]} == {
            "serving float30 [default]: equal answers",
            "serving churn [default]: equal answers",
        }
        assert {f["cell"].split()[0] for f in figures} == {"float30", "churn"}
        assert result["series"]["running replicas over time (s)"]
    if suite == "tune":  # both baselines: the process pool (FIFO) and Tune's stock ASHA
        assert {c["name"] for c in result["checks"]} == {
            "tune: equal trial scores",
            "tune asha: equal scores at the same step",
            "tune asha: best trial's ROC AUC",
        }
        systems = {(f["cell"].split(":")[0], f["side"], f["system"]) for f in figures}
        assert ("ASHA", "baseline", "Tune, stock ASHA") in systems
        assert ("FIFO", "baseline", "process pool (no Ray)") in systems
    return result


@pytest.mark.slow
def test_quick_train_benchmark_checks_auc_and_writes_table_and_plot(tmp_path: Path) -> None:
    """The training suite keeps its own CLI (``main``): run through the entry point, it checks
    that both sides' models score alike before its timings count, and writes its files."""
    done = bench("--quick", "--suite", "train", "--out", str(tmp_path), timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "train.json").read_text(encoding="utf-8"))
    [cell] = report["results"]
    assert cell["auc_agree"] is True, cell
    for side in ("raymlops", "baseline"):
        assert cell[side]["wall_s"] > 0
        assert cell[side]["peak_rss"] > 0
        assert 0.5 < cell[side]["test_auc"] <= 1.0
    assert cell["raymlops"]["node_peak_rss"], "each Ray node's peak RSS"
    assert "| " in (tmp_path / "train.md").read_text(encoding="utf-8")
    assert (tmp_path / "train.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
