"""The CLI without Ray: init, config check, registry commands and their exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from raymlops.cli import main
from raymlops.config import ColumnSpec, load_config
from raymlops.pipeline import open_registry
from raymlops.schema import Schema
from tests.helpers import random_rows, register_model

SCHEMA = Schema.from_columns({"x": ColumnSpec(type="float")}, target="y", task="classification")


def test_init_writes_a_project_that_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", str(tmp_path / "p")]) == 0
    config = tmp_path / "p" / "raymlops.yaml"
    assert (tmp_path / "p" / "data" / "train.csv").stat().st_size > 10_000
    assert main(["config", "check", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "ok" in out
    assert "classification / roc_auc" in out
    assert main(["init", str(tmp_path / "p")]) == 2, "an existing project is bad usage (exit 2)"
    assert "use --force" in capsys.readouterr().err


def test_help_has_no_rst_markup(capsys: pytest.CaptureFixture[str]) -> None:
    """Docstrings become --help text: no ``double backticks`` there."""
    from raymlops.cli import app

    for group in [app, *(g.typer_instance for g in app.registered_groups)]:
        for command in group.registered_commands:
            assert "``" not in (command.callback.__doc__ or ""), command.callback.__name__
    assert main(["registry", "promote", "--help"]) == 0
    assert "``" not in capsys.readouterr().out


def test_init_breast_cancer_example_loads(tmp_path: Path) -> None:
    assert main(["init", str(tmp_path), "--example", "breast_cancer"]) == 0
    config = load_config(tmp_path / "raymlops.yaml")
    assert config.data.source == "sklearn:breast_cancer"
    assert len(config.data.columns) == 31


@pytest.fixture
def project(tmp_path: Path) -> Path:
    config = tmp_path / "raymlops.yaml"
    config.write_text(
        "name: demo\nstorage: ./store\n"
        "data: {source: sklearn:iris, target: y, columns: {x: {type: float}}}\n"
        "training: {task: classification}\n"
    )
    registry = open_registry(load_config(config))
    for seed in range(2):
        register_model(registry, random_rows(100, seed=seed), SCHEMA)
    return config


def test_registry_list_show_promote_rollback(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = ["--config", str(project)]
    assert main(["registry", "list", *c]) == 0
    assert "v1" in capsys.readouterr().out
    assert main(["registry", "promote", *c, "v1"]) == 0
    assert main(["registry", "promote", *c, "v2", "--reason", "better"]) == 0
    assert "v1 → v2" in capsys.readouterr().out
    assert main(["registry", "rollback", *c]) == 0
    assert "v2 → v1" in capsys.readouterr().out
    assert main(["registry", "verify", *c]) == 0


def test_registry_errors_exit_2_with_a_message(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = ["--config", str(project)]
    assert main(["registry", "promote", *c, "v7"]) == 2
    assert "no version v7" in capsys.readouterr().err
    assert main(["registry", "rollback", *c]) == 2


def test_registry_verify_fails_with_exit_4_on_tampering(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = project.parent / "store" / "models" / "demo" / "versions" / "v2" / "model.skops"
    model.write_bytes(model.read_bytes() + b"!")
    assert main(["registry", "verify", "--config", str(project)]) == 4
    captured = capsys.readouterr()
    assert "v1: 10 files match" in captured.out
    assert "model.skops does not match its sha256" in captured.out
    assert main(["registry", "promote", "--config", str(project), "v2"]) == 4


def test_unknown_command_and_option_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trane"]) == 2
    assert main(["train", "--config"]) == 2


def test_promote_the_configured_canary(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["registry", "promote", "--config", str(project), "--canary"]) == 1
    assert "serving.canary.version is not set" in capsys.readouterr().err
    project.write_text(project.read_text() + "serving: {canary: {version: v2, fraction: 0.1}}\n")
    assert main(["registry", "promote", "--config", str(project), "--canary"]) == 0
    assert "→ v2" in capsys.readouterr().out
    assert open_registry(load_config(project)).audit()[-1].reason == "canary promoted"


def test_verify_checks_the_registrys_own_files_and_fix_cleans_staging(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = ["--config", str(project)]
    root = project.parent / "store" / "models" / "demo"
    (root / "versions" / ".staging-abc").mkdir()
    assert main(["registry", "verify", *c]) == 4
    assert "versions/.staging-abc: the staging folder" in capsys.readouterr().out
    assert main(["registry", "verify", *c, "--fix"]) == 0
    assert "removed the staging folder versions/.staging-abc" in capsys.readouterr().out
    assert not (root / "versions" / ".staging-abc").exists()


def test_a_truncated_audit_line_or_bad_aliases_json_exit_4_from_list_and_rollback(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = ["--config", str(project)]
    assert main(["registry", "promote", *c, "v1"]) == 0
    assert main(["registry", "promote", *c, "v2"]) == 0
    root = project.parent / "store" / "models" / "demo"
    audit = root / "audit.jsonl"
    audit.write_bytes(audit.read_bytes()[:-20])  # the last line cut short
    capsys.readouterr()
    assert main(["registry", "rollback", *c]) == 4
    err = capsys.readouterr().err
    assert "audit.jsonl line 2 is not an audit event" in err
    assert "Traceback" not in err
    (root / "aliases.json").write_text('{"champion": "v')
    assert main(["registry", "list", *c]) == 4
    err = capsys.readouterr().err
    assert "aliases.json is not valid JSON" in err
    assert "Traceback" not in err


def test_a_promotion_that_changes_the_input_columns_is_refused_unless_allowed(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Serving keeps its deploy-time request model: a champion that takes other columns would
    make every request a 422, so the move is refused with the redeploy advice."""
    c = ["--config", str(project)]
    registry = open_registry(load_config(project))
    wider = Schema.from_columns(
        {"x": ColumnSpec(type="float"), "z": ColumnSpec(type="float")},
        target="y",
        task="classification",
    )
    rows = random_rows(100, seed=3).assign(z=lambda f: f["x"] * 2)
    v3 = register_model(registry, rows, wider)
    assert main(["registry", "promote", *c, "v1"]) == 0
    capsys.readouterr()

    assert main(["registry", "promote", *c, v3]) == 2
    err = capsys.readouterr().err
    for expected in ("input schema changed", "new column 'z'", "--allow-schema-change", "raymlops serve"):
        assert expected in err, err
    assert registry.champion() == "v1", "a refused promotion leaves the champion in place"

    assert main(["registry", "promote", *c, v3, "--allow-schema-change"]) == 0
    assert registry.champion() == v3
    assert main(["registry", "rollback", *c]) == 2, "rolling back to the old columns too"
    assert "column 'z' removed" in capsys.readouterr().err
    assert main(["registry", "rollback", *c, "--allow-schema-change"]) == 0
    assert registry.champion() == "v1"
