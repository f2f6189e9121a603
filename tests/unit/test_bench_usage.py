"""The benchmark entry point's bad input (exit 2, a message that names the fix) and a failed
correctness check (exit 1, the cells named), in process: all of it is decided before Ray starts."""

from __future__ import annotations

import importlib.machinery
import sys
import types
from pathlib import Path

import pytest

from benchmarks import report, serving
from benchmarks.__main__ import SUITES, main


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def test_unknown_suite_exits_2_naming_the_choices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main(["--suite", "servng", "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    assert "unknown suite 'servng': choose one of serving, train, data, predict, drift, tune, loop, all" in err
    assert not (tmp_path / "out").exists()


def test_a_suite_that_does_not_exist_yet_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every listed suite exists today, so a listed one without its module is made here."""
    monkeypatch.setitem(SUITES, "ghost", ("benchmarks.ghost", "a suite with no module"))
    code, err = run_main(["--suite", "ghost", "--quick", "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    assert "the ghost suite (a suite with no module) does not exist yet" in err
    assert not (tmp_path / "out").exists()


def test_unreachable_address_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--suite", "drift", "--quick", "--address", "127.0.0.1:1", "--out", str(tmp_path)]
    code, err = run_main(argv, capsys)
    assert code == 2
    assert "cannot reach a Ray cluster at --address 127.0.0.1:1" in err
    assert "ray start --head" in err


def test_an_address_that_is_not_host_port_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main(["--suite", "tune", "--address", "nohost", "--out", str(tmp_path)], capsys)
    assert code == 2
    assert "--address 'nohost' is not host:port or ray://host:port" in err


def test_missing_wrk_exits_2_with_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(serving.shutil, "which", lambda name: None)
    code, err = run_main(["--suite", "serving", "--quick", "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    assert "error: serving: the serving suite needs wrk: apt-get install -y wrk" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("suite", "why"),
    [
        ("tune", "the tune suite (2 trials at a time, 1 CPU each)"),
        ("data", "the data suite (Ray's tasks next to the driver)"),
        ("predict", "the predict suite (Ray's tasks next to the driver)"),
        ("serving", "the serving suite (wrk, the server and Ray share the cores)"),
    ],
)
def test_too_few_cpus_for_the_cell_exits_2(
    suite: str,
    why: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(report, "usable_cores", lambda: 1)
    # wrk is there (the serving suite checks for it first); shutil is one module for all
    monkeypatch.setattr(serving.shutil, "which", lambda name: "/usr/bin/wrk" if name == "wrk" else None)
    code, err = run_main(["--suite", suite, "--quick", "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    assert f"error: {suite}: {why} needs at least 2 CPUs; this machine has 1" in err
    assert not (tmp_path / "out").exists()


def test_a_failed_correctness_check_exits_1_naming_the_cells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A suite whose two sides disagree: the run still writes its files (the evidence), but
    exits 1 and names each cell that disagrees, not the ones that agree."""
    module = types.ModuleType("benchmarks.disagrees")
    module.__spec__ = importlib.machinery.ModuleSpec("benchmarks.disagrees", None)

    def run(mode: str, address: str | None = None) -> report.SuiteResult:
        return report.SuiteResult(
            suite="disagrees", title="two sides that disagree",
            figures=[report.Figure("10 rows", "raymlops", "ours", "seconds", 1.0, "s"),
                     report.Figure("10 rows", "baseline", "theirs", "seconds", 2.0, "s")],
            checks=[report.Check("cell 10 rows: equal answers", False, "max abs diff 0.3"),
                    report.Check("cell 20 rows: equal answers", True, "max abs diff 0"),
                    report.Check("cell 30 rows: equal answers", False, "labels differ on 2 rows")],
            table=[{"cell": "10 rows"}], headline="headline",
        )  # fmt: skip

    module.run = run
    monkeypatch.setitem(sys.modules, "benchmarks.disagrees", module)
    monkeypatch.setitem(SUITES, "disagrees", ("benchmarks.disagrees", "a suite that disagrees"))
    code, err = run_main(["--suite", "disagrees", "--quick", "--out", str(tmp_path)], capsys)
    assert code == 1
    assert "disagrees: correctness check failed:" in err
    assert "cell 10 rows: equal answers: max abs diff 0.3" in err
    assert "cell 30 rows: equal answers: labels differ on 2 rows" in err
    assert "cell 20 rows" not in err
    assert len(list(tmp_path.glob("disagrees-*.json"))) == 1


def test_serving_with_an_address_off_this_machine_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The serving suite's model files and wrk stay here: a cluster elsewhere is refused."""
    import benchmarks.__main__ as entry

    monkeypatch.setattr(entry, "check_address", lambda address: None)  # as if it answered
    argv = ["--suite", "serving", "--quick", "--address", "10.0.0.5:6379", "--out", str(tmp_path)]
    code, err = run_main(argv, capsys)
    assert code == 2
    assert "the serving suite with --address needs a cluster on this machine" in err
    assert "10.0.0.5:6379 is not a loopback address" in err
