"""What every benchmark suite hands back and writes: figures, checks, the machine; JSON + table + PNG.

A suite returns a :class:`SuiteResult`: every measured number as a :class:`Figure` (which side
measured it, the raymlops path or the baseline a user would write instead), the correctness
checks that ran before the timing (:class:`Check`), and the rows of its markdown table.
:func:`write_result` writes ``<suite>-<timestamp>.json``, ``.md`` and ``.png`` side by side.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "Check",
    "Figure",
    "SuiteResult",
    "UsageError",
    "machine_info",
    "Process",
    "descendants",
    "markdown_table",
    "processes",
    "ray_nodes",
    "require_cores",
    "usable_cores",
    "write_result",
]

ROOT = Path(__file__).resolve().parent.parent
#: "goal": a target with no baseline to compare with (the loop suite)
Side = Literal["raymlops", "baseline", "goal"]


class UsageError(Exception):
    """A suite cannot run as asked (missing wrk, an --address it cannot use): exit 2."""


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container's or taskset's limit)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def require_cores(cores: int, why: str, *, have: float | None = None, where: str = "") -> None:
    """Refuse a cell the machine (or, with ``have``, the cluster) cannot run as measured
    (exit 2), rather than measure nonsense."""
    have = usable_cores() if have is None else have
    if have < cores:
        raise UsageError(
            f"{why} needs at least {cores} CPUs; {where or 'this machine has'} {have:g}: "
            "run it on a bigger machine or cluster"
        )


@dataclass(frozen=True)
class Figure:
    """One measured number."""

    cell: str  # what was measured, e.g. "float30 c16 1-row"
    side: Side
    system: str  # who measured it, e.g. "hand-written FastAPI" or "raymlops serve (default)"
    metric: str  # e.g. "rps", "rows_per_s", "p50_ms", "seconds"
    value: float
    unit: str
    size: float | None = None  # the x of a scale curve (rows, concurrency), where there is one


@dataclass(frozen=True)
class Check:
    """A correctness check run before timing: both sides computed the same thing."""

    name: str
    passed: bool
    detail: str


@dataclass
class SuiteResult:
    suite: str
    title: str
    figures: list[Figure]
    checks: list[Check]
    table: list[dict[str, str]]  # the markdown table's rows, column -> text, in order
    headline: str  # one line: the ratio a reader looks for first
    notes: list[str] = field(default_factory=list)  # said under the table
    extra: dict[str, Any] = field(default_factory=dict)  # suite-specific detail, in the JSON
    # extra panels of the plot: title -> {line label: [[x, y], ...]}
    series: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


@dataclass(frozen=True)
class Process:
    """One process as ``/proc/<pid>/stat`` and ``cmdline`` show it."""

    pid: int
    ppid: int
    cpu_s: float  # user + system CPU seconds so far (its own, not its reaped children's)
    rss_bytes: int  # resident memory (the same count as VmRSS in /proc/<pid>/status)
    cmdline: bytes  # NUL-separated; a Ray worker's starts with its title, b"ray::..."


def processes() -> dict[int, Process]:
    """Every process on this machine, by pid (empty where there is no /proc). A process that
    ends while it is read is left out."""
    proc = Path("/proc")
    if not proc.is_dir():
        return {}
    ticks, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    found = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        # the fields after the command name, which may itself hold spaces and brackets
        fields = stat[stat.rindex(")") + 2 :].split()
        found[int(entry.name)] = Process(
            pid=int(entry.name), ppid=int(fields[1]),
            cpu_s=(int(fields[11]) + int(fields[12])) / ticks,
            rss_bytes=int(fields[21]) * page, cmdline=cmdline,
        )  # fmt: skip
    return found


def descendants(root: int, table: dict[int, Process] | None = None) -> dict[int, Process]:
    """The processes below ``root`` (its children, theirs, ...; not ``root``), from ``table``
    or a fresh :func:`processes`. Only this tree counts, even where other Rays run."""
    table = processes() if table is None else table
    children: dict[int, list[int]] = {}
    for process in table.values():
        children.setdefault(process.ppid, []).append(process.pid)
    found, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid not in found:
            found[pid] = table[pid]
            todo += children.get(pid, [])
    return found


def machine_info() -> dict[str, Any]:
    """The machine a run came from; taken before the run (the load average says how busy)."""
    from importlib.metadata import PackageNotFoundError, version

    packages = {}
    for name in ("raymlops", "ray", "xgboost", "evidently", "pandas", "numpy", "scikit-learn"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return {
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": _memory_gib(),
        "gpu": _gpu(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": packages,
        "commit": _git_commit(),
    }


def ray_nodes() -> list[dict[str, Any]]:
    """The nodes of the connected Ray and their resources (call while Ray is up)."""
    import ray

    return [
        {"node_ip": n.get("NodeManagerAddress"), "alive": n.get("Alive"),
         "resources": {k: v for k, v in n.get("Resources", {}).items() if "node:" not in k}}
        for n in ray.nodes()
    ]  # fmt: skip


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _gpu() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    done = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    return done.stdout.strip() or None


def _git_commit() -> str | None:
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


def markdown_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "(no rows)\n"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_result(
    result: SuiteResult, out: Path, *, machine: dict[str, Any], argv: list[str], mode: str
) -> dict[str, Path]:
    """``<suite>-<timestamp>.json``, ``.md`` and ``.png`` in ``out``; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = out / f"{result.suite}-{stamp}"
    paths = {"json": base.with_suffix(".json"), "table": base.with_suffix(".md"),
             "plot": base.with_suffix(".png")}  # fmt: skip
    command = "python -m benchmarks " + " ".join(argv)
    checks = "\n".join(
        f"- {'passed' if c.passed else 'FAILED'}: {c.name}: {c.detail}" for c in result.checks
    )
    notes = "\n".join(f"- {n}" for n in result.notes)
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items() if v)
    paths["table"].write_text(
        f"## {result.title}\n\n{result.headline}\n\n{markdown_table(result.table)}\n"
        f"Correctness checks (both sides computed the same thing):\n{checks}\n\n{notes}\n\n"
        f"Command: `{command}` ({mode}). Machine: {machine['cores']} cores, "
        f"{machine['memory_gib']} GiB, GPU {machine['gpu'] or 'none'}, load average before "
        f"{machine['load_average_before']}; {packages}; commit {machine['commit']}.\n",
        encoding="utf-8",
    )
    _plot(result, paths["plot"])
    payload = {
        "suite": result.suite,
        "title": result.title,
        "mode": mode,
        "command": command,
        "created_utc": stamp,
        "passed": result.passed,
        "headline": result.headline,
        "machine": machine,
        "figures": [asdict(f) for f in result.figures],
        "checks": [asdict(c) for c in result.checks],
        "table": result.table,
        "notes": result.notes,
        "series": result.series,
        "extra": result.extra,
        "files": {k: p.name for k, p in paths.items()},
    }
    paths["json"].write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    return paths


def _plot(result: SuiteResult, path: Path) -> None:
    """One panel per metric: bars per cell (or a line over sizes), raymlops next to its baseline;
    then the suite's extra series (e.g. replicas over time)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(f.metric for f in result.figures))
    panels = len(metrics) + len(result.series)
    fig, axes = plt.subplots(1, max(1, panels), figsize=(4.6 * max(1, panels), 4.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=False):
        figures = [f for f in result.figures if f.metric == metric]
        systems = list(dict.fromkeys(f.system for f in figures))
        sizes = {f.size for f in figures}
        if None not in sizes and len(sizes) > 1:  # a scale curve
            for system in systems:
                points = sorted((f.size, f.value) for f in figures if f.system == system)
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=system)
            ax.set_xscale("log")
            ax.set_xlabel("size")
        else:
            cells = list(dict.fromkeys(f.cell for f in figures))
            width = 0.8 / max(1, len(systems))
            for i, system in enumerate(systems):
                values = {f.cell: f.value for f in figures if f.system == system}
                xs = [j + i * width for j in range(len(cells))]
                ax.bar(xs, [values.get(c, 0.0) for c in cells], width, label=system)
            ax.set_xticks([j + width * (len(systems) - 1) / 2 for j in range(len(cells))])
            ax.set_xticklabels(cells, rotation=35, ha="right", fontsize=7)
        ax.set_title(f"{metric} ({figures[0].unit})", fontsize=9)
        ax.legend(fontsize=6)
    for ax, (title, lines) in zip(axes[0][len(metrics) :], result.series.items(), strict=False):
        for label, points in lines.items():
            ax.step([p[0] for p in points], [p[1] for p in points], where="post", label=label)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=6)
    fig.suptitle(result.title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
