"""Registry: immutable verified versions, atomic aliases, crash safety, serialized promoters."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from raymlops.config import ColumnSpec
from raymlops.errors import IntegrityError, RegistryError
from raymlops.predictor import load_predictor
from raymlops.registry import Registry
from raymlops.registry.store import MANIFEST
from raymlops.schema import Schema
from raymlops.storage import Storage
from tests.helpers import promote_series, random_rows, register_model

SCHEMA = Schema.from_columns({"x": ColumnSpec(type="float")}, target="y", task="classification")


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    # bookkeeping under test; the probe (a child process per move) has tests/unit/test_probe.py
    return Registry(Storage.from_uri(str(tmp_path / "store")), "demo", probe=None)


def test_versions_are_numbered_and_verify(registry: Registry) -> None:
    v1 = register_model(registry, random_rows(200), SCHEMA)
    v2 = register_model(registry, random_rows(200, seed=1), SCHEMA)
    assert (v1, v2) == ("v1", "v2")
    assert registry.versions() == ["v1", "v2"]
    report = registry.verify("v2")
    assert report.ok
    assert report.checked == 10, "model, 7 bundle files, the card (.md, .html); not MANIFEST.json"


def test_loading_checks_sha256_and_refuses_a_tampered_model(
    registry: Registry, tmp_path: Path
) -> None:
    version = register_model(registry, random_rows(200), SCHEMA)
    predictor = load_predictor(registry, version)
    assert predictor.version == "v1"
    assert predictor.kind == "logistic_regression"
    model_file = tmp_path / "store" / "models" / "demo" / "versions" / "v1" / "model.skops"
    model_file.write_bytes(model_file.read_bytes()[:-10] + b"0123456789")
    report = registry.verify(version)
    assert not report.ok
    assert "model.skops does not match its sha256" in report.problems[0]
    with pytest.raises(IntegrityError, match="refusing to load"):
        load_predictor(registry, version)


def test_a_file_added_to_a_version_fails_verification(registry: Registry, tmp_path: Path) -> None:
    register_model(registry, random_rows(200), SCHEMA)
    (tmp_path / "store" / "models" / "demo" / "versions" / "v1" / "extra.bin").write_bytes(b"x")
    assert "extra.bin is not in the manifest" in registry.verify("v1").problems[0]


def test_crash_before_the_manifest_leaves_no_visible_version(
    registry: Registry, tmp_path: Path
) -> None:
    def crash(version: str) -> None:
        raise KeyboardInterrupt("power cut")

    with pytest.raises(KeyboardInterrupt):
        registry.register({"model.ubj": b"abc"}, before_manifest=crash)
    assert registry.versions() == []
    leftovers = os.listdir(tmp_path / "store" / "models" / "demo" / "versions")
    assert leftovers == [], f"staging files are cleaned up: {leftovers}"
    assert registry.register({"model.ubj": b"abc"}) == "v1"


def test_crash_between_registering_and_moving_the_alias_keeps_the_old_champion(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1 = register_model(registry, random_rows(200), SCHEMA)
    registry.promote(v1, reason="first")
    v2 = register_model(registry, random_rows(200, seed=2), SCHEMA)

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt("crash before the alias moves")

    monkeypatch.setattr(Storage, "write_json", crash)
    with pytest.raises(KeyboardInterrupt):
        registry.promote(v2, reason="second")
    monkeypatch.undo()
    assert registry.champion() == "v1"
    assert registry.verify(v2).ok, "the new version stays complete and can be promoted later"
    load_predictor(registry, "champion")


def test_promote_refuses_a_version_that_does_not_verify(registry: Registry, tmp_path: Path) -> None:
    v1 = register_model(registry, random_rows(200), SCHEMA)
    (tmp_path / "store" / "models" / "demo" / "versions" / "v1" / "metrics.json").write_text("{}")
    with pytest.raises(IntegrityError, match="does not verify"):
        registry.promote(v1)
    assert registry.champion() is None


def test_promote_and_rollback_are_audited(registry: Registry) -> None:
    for seed in range(3):
        registry.promote(
            register_model(registry, random_rows(100, seed=seed), SCHEMA), reason=f"r{seed}"
        )
    assert registry.champion() == "v3"
    event = registry.rollback(reason="bad deploy")
    assert (event.previous, event.version) == ("v3", "v2")
    assert registry.rollback().version == "v1"
    with pytest.raises(RegistryError, match="no earlier version"):
        registry.rollback()
    actions = [(e.action, e.version) for e in registry.audit()]
    assert actions == [
        ("promote", "v1"),
        ("promote", "v2"),
        ("promote", "v3"),
        ("rollback", "v2"),
        ("rollback", "v1"),
    ]


def test_unknown_versions_and_aliases_are_clear_errors(registry: Registry) -> None:
    register_model(registry, random_rows(100), SCHEMA)
    with pytest.raises(RegistryError, match=r"no version v9 \(versions: v1\)"):
        registry.resolve("v9")
    with pytest.raises(RegistryError, match="no alias 'champion'"):
        registry.resolve("champion")
    assert registry.resolve("1") == "v1"


def test_two_promoters_in_separate_processes_are_serialized(
    registry: Registry, tmp_path: Path
) -> None:
    versions = [register_model(registry, random_rows(60, seed=s), SCHEMA) for s in range(4)]
    root = str(tmp_path / "store")
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=promote_series, args=(root, versions, 0.02)),
        context.Process(target=promote_series, args=(root, list(reversed(versions)), 0.02)),
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    events = registry.audit()
    assert len(events) == 8, "every promotion of both processes is in the audit log"
    for before, after in zip(events, events[1:], strict=False):
        assert after.previous == before.version, "each promotion saw the alias the previous one set"
    assert registry.champion() == events[-1].version
    assert json.loads((tmp_path / "store" / "models" / "demo" / "aliases.json").read_text()) == {
        "champion": events[-1].version
    }


def test_manifest_is_written_last(registry: Registry, tmp_path: Path) -> None:
    seen: list[str] = []

    def watch(version: str) -> None:
        staged = [p for p in (tmp_path / "store" / "models" / "demo" / "versions").iterdir()]
        seen.extend(sorted(f.name for f in staged[0].iterdir()))

    registry.register({"a.bin": b"1", "b.bin": b"2"}, before_manifest=watch)
    assert seen == ["a.bin", "b.bin"]
    assert MANIFEST not in seen


def test_storage_given_as_a_file_uri(tmp_path: Path) -> None:
    registry = Registry(Storage.from_uri(f"file://{tmp_path}/uri-store"), "demo")
    version = register_model(registry, random_rows(100), SCHEMA)
    registry.promote(version)
    assert (tmp_path / "uri-store" / "models" / "demo" / "aliases.json").exists()
    assert load_predictor(registry).version == "v1"


# -- the registry's history cannot lie (issue 12) ------------------------------------------------


def _crash_writing_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Storage.write_json

    def crash(self: Storage, relpath: str, payload: object) -> None:
        if relpath.endswith("aliases.json"):
            raise KeyboardInterrupt("crash after the audit append, before aliases.json")
        original(self, relpath, payload)

    monkeypatch.setattr(Storage, "write_json", crash)


def test_a_crash_between_audit_and_alias_cannot_make_rollback_move_forward(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1, v2, v3 = (register_model(registry, random_rows(60, seed=s), SCHEMA) for s in range(3))
    registry.promote(v1)
    registry.promote(v2)
    _crash_writing_aliases(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        registry.promote(v3)
    monkeypatch.undo()
    assert registry.champion() == v2
    assert [e.version for e in registry.audit()] == [v1, v2, v3], "the event was appended"
    assert [e.version for e in registry.uncommitted_events()] == [v3]
    assert registry.history() == [v1, v2]
    event = registry.rollback(reason="back")
    assert (event.previous, event.version) == (v2, v1), "rollback goes back, never forward"
    assert registry.champion() == v1
    # a later move after the crash: the stray event stays recognised as never applied
    registry.promote(v3)
    assert registry.history() == [v1, v3]
    assert registry.rollback().version == v1


def test_names_are_matched_whole_and_never_leave_the_registry(
    registry: Registry, tmp_path: Path
) -> None:
    v1 = register_model(registry, random_rows(60), SCHEMA)
    registry.promote(v1)
    with pytest.raises(RegistryError, match="model name"):
        Registry(registry.storage, "demo\n")
    with pytest.raises(RegistryError, match="model name"):
        Registry(registry.storage, "../demo")
    with pytest.raises(RegistryError):
        registry.resolve("v1\n")
    with pytest.raises(RegistryError, match="not a valid name"):
        registry.promote(v1, alias="champion\n")
    with pytest.raises(RegistryError, match="file name"):
        registry.register({"../aliases.json": b"{}"})
    aliases = tmp_path / "store" / "models" / "demo" / "aliases.json"
    aliases.write_text(json.dumps({"champion": "../../x"}))
    with pytest.raises(IntegrityError, match="must map alias names to version names"):
        registry.champion()
    aliases.write_text(json.dumps({"champion": "v1"}))
    manifest_path = tmp_path / "store" / "models" / "demo" / "versions" / "v1" / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["../../aliases.json"] = {"sha256": "0" * 64, "bytes": 1}
    manifest_path.write_text(json.dumps(manifest))
    report = registry.verify(v1)
    assert not report.ok
    assert "not a plain file name" in report.problems[0]


def test_a_version_holding_another_versions_manifest_fails_verify(
    registry: Registry, tmp_path: Path
) -> None:
    v1 = register_model(registry, random_rows(60), SCHEMA)
    v2 = register_model(registry, random_rows(60, seed=1), SCHEMA)
    versions = tmp_path / "store" / "models" / "demo" / "versions"
    for name in os.listdir(versions / v1):  # v2 becomes a byte-for-byte copy of v1
        (versions / v2 / name).write_bytes((versions / v1 / name).read_bytes())
    report = registry.verify(v2)
    assert not report.ok
    assert "is the manifest of 'demo' 'v1'" in report.problems[0]
    with pytest.raises(IntegrityError):
        registry.promote(v2)


def test_check_files_reports_bad_aliases_audit_lines_and_staging_folders(
    registry: Registry, tmp_path: Path
) -> None:
    v1 = register_model(registry, random_rows(60), SCHEMA)
    registry.promote(v1)
    assert registry.check_files().ok
    root = tmp_path / "store" / "models" / "demo"
    (root / "versions" / ".staging-0123").mkdir()
    (root / "versions" / ".staging-0123" / "model.ubj").write_bytes(b"half")
    report = registry.check_files()
    assert any(".staging-0123" in p for p in report.problems)
    fixed = registry.check_files(fix=True)
    assert fixed.removed == [".staging-0123"]
    assert not (root / "versions" / ".staging-0123").exists()
    assert registry.check_files().ok
    (root / "versions" / "v1" / "metrics.json").write_text("{}")
    assert any("champion -> v1, which does not verify" in p for p in registry.check_files().problems)
    with open(root / "audit.jsonl", "a") as audit:
        audit.write('{"time": "2026-01-01", "act')
    assert any("audit.jsonl line 2" in p for p in registry.check_files().problems)


def test_writes_are_fsynced_before_the_rename(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync, real_replace = os.fsync, os.replace
    order: list[str] = []

    def fsync(fd: int) -> None:
        order.append("fsync")
        synced.append(fd)
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        order.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    registry.storage.write_bytes("x/file.bin", b"data")
    assert order == ["fsync", "rename", "fsync"], "file, then rename, then its folder"


def test_local_storage_is_private_to_its_user(tmp_path: Path) -> None:
    import stat

    storage = Storage.from_uri(str(tmp_path / "private"))
    registry = Registry(storage, "demo", probe=None)
    version = register_model(registry, random_rows(60), SCHEMA)
    storage.write_bytes("predictions/demo/date=2026-01-01/part-0.parquet", b"rows")

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    root = tmp_path / "private"
    assert mode(root) == 0o700
    reference = root / "models" / "demo" / "versions" / version / "reference.parquet"
    log = root / "predictions" / "demo" / "date=2026-01-01" / "part-0.parquet"
    for path in (reference, log):
        assert mode(path) == 0o600, path
        assert mode(path.parent) == 0o700, path.parent
    assert mode(root / "predictions") == 0o700
