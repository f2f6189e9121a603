"""Config: valid fixtures load, each invalid fixture fails naming the key, the value and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raymlops.cli import main
from raymlops.config import ProjectConfig, config_hash, load_config
from raymlops.errors import ConfigError

CONFIGS = Path(__file__).parents[1] / "configs"
VALID = sorted((CONFIGS / "valid").glob("*.yaml"))
INVALID = sorted((CONFIGS / "invalid").glob("*.yaml"))


def _expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: <message>'"
    return first.removeprefix("# expect: ")


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_configs_load(path: Path) -> None:
    config = load_config(path)
    assert isinstance(config, ProjectConfig)
    assert config.training.metric, "a metric is always filled in from the task"


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_configs_fail_with_their_message(path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert _expected(path) in str(caught.value), f"message was:\n{caught.value}"


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_config_check_exits_2_with_one_message(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["config", "check", "--config", str(path)])
    captured = capsys.readouterr()
    assert code == 2
    assert _expected(path).split(":")[0] in captured.err
    assert "Traceback" not in captured.err + captured.out


def test_missing_config_file_names_the_path_and_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.yaml"
    assert main(["config", "check", "--config", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err
    assert "raymlops init" in err


def test_missing_data_file_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "name: x\ndata: {source: ./data/none.csv, target: y, columns: {a: {type: float}}}\n"
        "training: {task: classification}\n"
    )
    assert main(["config", "check", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "data.source" in err
    assert "none.csv" in err


def test_unreachable_storage_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    config = tmp_path / "c.yaml"
    config.write_text(
        f"name: x\nstorage: {blocker}/registry\n"
        "data: {source: sklearn:iris, target: target, columns: {a: {type: float}}}\n"
        "training: {task: classification}\n"
    )
    assert main(["config", "check", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "storage" in err
    assert str(blocker) in err


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    config = tmp_path / "sub" / "c.yaml"
    config.parent.mkdir()
    config.write_text(
        "name: x\nstorage: ./store\ndata: {source: ./d.csv, target: y, columns: {a: {type: float}}}\n"
        "training: {task: regression}\n"
    )
    loaded = load_config(config)
    assert loaded.storage == str(tmp_path / "sub" / "store")
    assert loaded.data.source == str(tmp_path / "sub" / "d.csv")
    assert loaded.training.metric == "rmse"
    assert loaded.training.models == ["xgboost", "random_forest", "ridge"]


def test_config_hash_ignores_formatting(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(
        "name: x\ndata: {source: sklearn:iris, target: target, columns: {a: {type: float}}}\n"
        "training: {task: classification}\n"
    )
    b.write_text(
        "training:\n  task: classification\nname: x\ndata:\n  target: target\n"
        "  source: sklearn:iris\n  columns:\n    a: {type: float}\n"
    )
    assert config_hash(load_config(a)) == config_hash(load_config(b))


def test_config_is_frozen() -> None:
    config = load_config(VALID[0])
    with pytest.raises(Exception, match="frozen"):
        config.name = "other"  # type: ignore[misc]


def test_config_schema_command_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "schema"]) == 0
    assert '"ProjectConfig"' in capsys.readouterr().out or "properties" in capsys.readouterr().out


def test_a_yaml_alias_bomb_is_refused_at_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import time

    started = time.perf_counter()
    code = main(["config", "check", "--config", str(CONFIGS / "invalid" / "yaml_alias_bomb.yaml")])
    assert code == 2
    assert time.perf_counter() - started < 5, "refused before anything is expanded"
    assert "line 2, column 4: YAML anchors and aliases" in capsys.readouterr().err


def test_a_column_pydantic_cannot_use_is_refused_by_config_check_not_by_serving() -> None:
    from raymlops.config import DataConfig

    with pytest.raises(ValueError, match="'model_config'"):
        DataConfig.model_validate(
            {"source": "x.csv", "target": "y", "columns": {"model_config": {"type": "float"}}}
        )
    # names pydantic keeps as fields stay allowed (a warning about shadowing is not a refusal)
    for name in ("json", "mean radius", "model_x", "1x"):
        config = DataConfig.model_validate(
            {"source": "x.csv", "target": "y", "columns": {name: {"type": "float"}}}
        )
        assert name in config.columns


def test_credentials_in_uris_are_never_printed_or_dumped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from raymlops.errors import StorageError
    from raymlops.storage import Storage

    secret_uri = "s3://AKIAEXAMPLE:wJalrSECRET@bucket/reg?endpoint_override=x&secret_key=wJalrSECRET"
    # an error about a bad value shows the URI without its secrets
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"name: '{secret_uri}'\n"  # not a valid name: the error shows the value
        "data: {source: x.csv, target: y, columns: {a: {type: float}}}\n"
        "training: {task: classification}\n"
    )
    assert main(["config", "check", "--config", str(bad)]) == 2
    assert "s3://***@bucket/reg" in capsys.readouterr().err
    good = tmp_path / "good.yaml"
    good.write_text(
        f"name: creds\nstorage: '{secret_uri}'\n"
        f"data: {{source: '{secret_uri}', target: y, columns: {{a: {{type: float}}}}}}\n"
        "training: {task: classification}\n"
    )
    config = load_config(good)
    dumped = json.dumps(config.model_dump(mode="json"))  # what lineage.json stores
    assert "s3://***@bucket/reg?endpoint_override=x&secret_key=***" in dumped
    assert config.storage == secret_uri, "the config itself keeps the real URI to connect with"
    with pytest.raises(StorageError) as caught:
        Storage.from_uri("s3://AKIAEXAMPLE:wJalrSECRET@bucket/reg?scheme=nope")
    printed = capsys.readouterr()
    for text in (dumped, str(caught.value), printed.out, printed.err):
        assert "wJalrSECRET" not in text
        assert "AKIAEXAMPLE" not in text
