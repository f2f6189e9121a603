"""One entry point for the benchmark suites: ``python -m benchmarks --suite serving --quick``.

Each suite measures raymlops next to what a user would run instead, checks that both sides
compute the same thing before timing, and writes ``<suite>-<timestamp>.json``, ``.md`` and
``.png`` under ``--out``. Exit status: 0 when every suite ran and passed its checks, 1 when a
correctness check failed (the cells that disagree are named), 2 on bad input (unknown suite,
a suite that does not exist yet, missing wrk, unreachable ``--address``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

__all__ = ["SUITES", "available", "main", "writes_suite_result"]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
#: suite -> (module, what it compares); a module that is not there yet is "not implemented"
SUITES = {
    "serving": ("benchmarks.serving", "raymlops serve vs a hand-written FastAPI server"),
    "train": ("benchmarks.train", "Ray training vs pandas + xgboost / scikit-learn"),
    "data": ("benchmarks.data", "Ray Data validation and features vs pandas"),
    "predict": ("benchmarks.predict", "raymlops predict vs a pandas + xgboost script"),
    "drift": ("benchmarks.drift", "raymlops drift vs one Evidently DataDriftPreset run"),
    "tune": ("benchmarks.tune", "Tune search vs the same trials in a process pool"),
    "loop": ("benchmarks.loop", "the demo loop's stage times against their goals"),
}
EXIT_USAGE = 2


class Usage(Exception):
    """Bad input: exit 2 with this message."""


def available(suite: str) -> bool:
    """The suite's module is there with ``run(mode, address) -> SuiteResult`` or ``main(argv)``."""
    return _entry(suite) is not None


def writes_suite_result(suite: str) -> bool:
    """Whether the suite hands back a SuiteResult (else its ``main`` writes its own files)."""
    return _entry(suite) == "run"


def _entry(suite: str) -> str | None:
    name = SUITES[suite][0]
    try:
        if importlib.util.find_spec(name) is None:
            return None
    except ModuleNotFoundError:
        return None
    module = importlib.import_module(name)
    return "run" if hasattr(module, "run") else "main" if hasattr(module, "main") else None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="raymlops benchmarks side by side with what a user would run instead.",
    )
    parser.add_argument(
        "--suite", default="all", help=f"one of {', '.join(SUITES)}, all (default: all)"
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="every suite in seconds, small data")
    size.add_argument("--full", action="store_true", help="the large sizes (minutes to hours)")
    parser.add_argument(
        "--address", default=None, help="a running Ray cluster (host:port or ray://host:port)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for JSON, table, plot")
    parser.add_argument(
        "--prediction-log",
        choices=("on", "off"),
        default=None,
        help="serving suite: serve only with the prediction log on, or only off (default: the "
        "standard and full runs serve both and report the log's cost)",
    )
    parser.add_argument(
        "--readme",
        action="store_true",
        help="put each suite's table and plot into README.md's Benchmarks section (make bench)",
    )
    args = parser.parse_args(argv)
    if args.suite != "all" and args.suite not in SUITES:
        raise Usage(f"unknown suite {args.suite!r}: choose one of {', '.join(SUITES)}, all")
    return args


def check_address(address: str, timeout: float = 5.0) -> None:
    """Fail early, with the address in the message, when nothing answers there."""
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    if not parsed.hostname or not parsed.port:
        raise Usage(f"--address {address!r} is not host:port or ray://host:port")
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=timeout):
            pass
    except OSError as exc:
        raise Usage(
            f"cannot reach a Ray cluster at --address {address} ({exc}); start one "
            "(ray start --head) or check the host and port"
        ) from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
        if args.address is not None:
            check_address(args.address)
        suites = list(SUITES) if args.suite == "all" else [args.suite]
        missing = [s for s in suites if not available(s)]
        if args.suite != "all" and missing:
            raise Usage(
                f"the {args.suite} suite ({SUITES[args.suite][1]}) does not exist yet: "
                f"there is no {SUITES[args.suite][0]} module with run() or main()"
            )
    except Usage as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from benchmarks.readme import publish
    from benchmarks.report import UsageError, machine_info, write_result

    mode = "quick" if args.quick else "full" if args.full else "standard"
    status = 0
    for suite in suites:
        if suite in missing:
            print(f"{suite}: not implemented yet ({SUITES[suite][1]}): skipped", flush=True)
            continue
        module = importlib.import_module(SUITES[suite][0])
        if not writes_suite_result(suite):  # a suite with its own CLI: forward the options
            forwarded = [f"--{mode}"] if mode != "standard" else []
            forwarded += ["--out", str(args.out)]
            forwarded += ["--address", args.address] if args.address else []
            print(f"{suite}: {SUITES[suite][0]}.main({forwarded})", flush=True)
            code = int(module.main(forwarded) or 0)
            status = max(status, code)
            if args.readme and code == 0 and (args.out / f"{suite}.md").exists():
                publish(suite, args.out / f"{suite}.md", args.out / f"{suite}.png")
            continue
        run: Callable = module.run
        machine = machine_info()  # before the run: the load average says how busy it was
        # a suite that keeps files of its own (the loop's demo project) takes --out too
        wanted = {"out": args.out, "prediction_log": args.prediction_log}
        extra = {k: v for k, v in wanted.items() if k in inspect.signature(run).parameters}
        try:
            result = run(mode, address=args.address, **extra)
        except UsageError as exc:
            print(f"error: {suite}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        paths = write_result(result, args.out, machine=machine, argv=argv, mode=mode)
        print(f"\n{result.headline}")
        print("\n".join(f"wrote {p}" for p in paths.values()), flush=True)
        if args.readme and result.passed:
            print(f"updated {publish(suite, paths['table'], paths['plot'])}", flush=True)
        if not result.passed:
            failed = [f"{c.name}: {c.detail}" for c in result.checks if not c.passed]
            print(f"{suite}: correctness check failed:\n  " + "\n  ".join(failed), file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
