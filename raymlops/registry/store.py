"""The model registry on one storage URI (pure bookkeeping; no Ray).

Layout, per model name::

    {storage}/models/{name}/versions/{vN}/   model file, features.json, schema.json,
                                              reference.parquet, metrics.json, gate.json,
                                              lineage.json, trials.json, MANIFEST.json
    {storage}/models/{name}/aliases.json      {"champion": "v3"}
    {storage}/models/{name}/audit.jsonl       one JSON line per promotion and rollback

Guarantees:

* A version is immutable and becomes visible only when complete: on a local folder its files
  are written to a staging folder that is renamed into place; on an object store
  ``MANIFEST.json`` is written last and a version without it does not exist.
* ``MANIFEST.json`` holds the sha256 and size of every file; :meth:`Registry.read_verified`
  checks them before anything is loaded, and :meth:`Registry.verify` checks a whole version.
* Aliases move only to a version that verifies, under a lock (``flock`` locally), by writing a
  new ``aliases.json`` and renaming it over the old one; every move is appended to the audit log.
* Aliases move only to a version that loads and scores its own reference rows in a child
  process (:mod:`raymlops.registry.probe`): a model file that crashes its loader is refused
  before anything serves it.

Example:
    >>> registry = Registry(Storage.from_uri("./.raymlops"), "churn")  # doctest: +SKIP
    >>> version = registry.register({"model.ubj": b"..."}, summary={"metric": 0.9})  # doctest: +SKIP
    >>> registry.promote(version, reason="first model")  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import re
import socket
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from raymlops.errors import IntegrityError, RegistryError, SchemaChangeError
from raymlops.registry.compat import input_schema_change
from raymlops.storage import Storage

__all__ = ["MANIFEST", "AuditEvent", "Registry", "RegistryReport", "VerifyReport", "VersionInfo"]

MANIFEST = "MANIFEST.json"
SCHEMA = "schema.json"  # the name bundle.VersionBundle.SCHEMA gives it
CHAMPION = "champion"
# every name that becomes part of a path is matched whole (fullmatch: `$` accepts a trailing
# newline) and can never be `..` or hold a `/`
_VERSION = re.compile(r"v(\d{1,9})")
_ALIAS = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
STAGING_PREFIX = ".staging-"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class VersionInfo:
    """A complete version, as listed: when, what model, its summary metrics, its aliases."""

    version: str
    created_at: str
    summary: dict[str, Any]
    aliases: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class VerifyReport:
    """The result of checking every file of a version against its manifest."""

    version: str
    ok: bool
    checked: int
    problems: list[str]


@dataclass(frozen=True)
class RegistryReport:
    """The registry's own files: aliases.json, audit.jsonl and leftover staging folders."""

    problems: list[str]
    notes: list[str]
    removed: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class AuditEvent:
    """One alias move: who moved which alias from which version to which, when and why."""

    time: str
    action: str  # promote | rollback
    alias: str
    version: str
    previous: str | None
    actor: str
    reason: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def _probe_in_child(registry: Registry, version: str) -> None:
    from raymlops.registry.probe import probe_version

    probe_version(registry, version)


#: ``probe(registry, version)`` raises to refuse a version an alias would move to
Probe = Callable[["Registry", str], None]


class Registry:
    """Versions, aliases and the audit log of one model name on a :class:`Storage`.

    ``probe`` checks a version before an alias moves to it; the default loads it and scores
    its reference rows in a child process. ``None`` skips that (only for registries whose
    files are not models, as in some tests).
    """

    def __init__(self, storage: Storage, name: str, *, probe: Probe | None = _probe_in_child) -> None:
        if not _MODEL_NAME.fullmatch(name):
            raise RegistryError(
                f"model name {name!r} is not valid: lowercase letters, digits, - and _ "
                "(at most 63, starting with a letter or digit)"
            )
        self.storage = storage
        self.name = name
        self.base = f"models/{name}"
        self.probe = probe

    def _p(self, *parts: str) -> str:
        return "/".join([self.base, *parts])

    @property
    def location(self) -> str:
        """Where this model's registry lives, for people."""
        return self.storage.path(self.base)

    # -- versions --------------------------------------------------------------------------------

    def _numbers(self) -> list[int]:
        return sorted(
            int(m.group(1))
            for entry in self.storage.list_dir(self._p("versions"))
            if (m := _VERSION.fullmatch(entry))
        )

    def versions(self) -> list[str]:
        """Complete versions (with a manifest), oldest first."""
        return [
            f"v{n}"
            for n in self._numbers()
            if self.storage.exists(self._p("versions", f"v{n}", MANIFEST))
        ]

    def register(
        self,
        files: dict[str, bytes],
        *,
        summary: dict[str, Any] | None = None,
        derived: Callable[[str], dict[str, bytes]] | None = None,
        before_manifest: Any = None,
    ) -> str:
        """Write a new immutable version holding ``files``; returns its name (``vN``).

        ``derived`` makes more files from the version's name once it is chosen (the model card,
        whose title names the version); they are covered by the manifest like the others.
        ``before_manifest`` is a test hook called after the files and before the manifest,
        to simulate a crash in between.
        """
        if MANIFEST in files:
            raise ValueError(f"{MANIFEST} is written by the registry")
        with self.storage.lock(self._p(".lock")):
            numbers = self._numbers()
            version = f"v{(numbers[-1] if numbers else 0) + 1}"
            files = {**files, **(derived(version) if derived is not None else {})}
            for filename in files:
                if filename == MANIFEST or not _FILE_NAME.fullmatch(filename):
                    raise RegistryError(
                        f"file name {filename!r} is not valid in a version: letters, digits, "
                        "'.', '-' and '_', no folders"
                    )
            local = self.storage.is_local
            folder = self._p("versions", f"{STAGING_PREFIX}{uuid.uuid4().hex}" if local else version)
            manifest = {
                "format": 1,
                "name": self.name,
                "version": version,
                "created_at": _now(),
                "files": {
                    n: {"sha256": sha256(b), "bytes": len(b)} for n, b in sorted(files.items())
                },
                "summary": summary or {},
            }
            try:
                for filename, data in files.items():
                    self.storage.write_bytes(f"{folder}/{filename}", data)
                if before_manifest is not None:
                    before_manifest(version)
                self.storage.write_json(f"{folder}/{MANIFEST}", manifest)
                if local:
                    self.storage.sync_dir(folder)  # its entries are on disk before it appears
                    self.storage.move(folder, self._p("versions", version))
                    self.storage.sync_dir(self._p("versions"))
            except BaseException:
                if local:
                    self.storage.delete_dir(folder)
                raise
        return version

    def manifest(self, version: str) -> dict[str, Any]:
        version = self.resolve(version)
        try:
            payload = self.storage.read_json(self._p("versions", version, MANIFEST))
        except FileNotFoundError:
            raise RegistryError(
                f"{self.name} {version}: no manifest (incomplete version)"
            ) from None
        except ValueError:
            raise IntegrityError(
                f"{self.name} {version}: MANIFEST.json is not valid JSON"
            ) from None
        if not isinstance(payload, dict) or not isinstance(payload.get("files"), dict):
            raise IntegrityError(f"{self.name} {version}: MANIFEST.json has no file list")
        if payload.get("name") != self.name or payload.get("version") != version:
            raise IntegrityError(
                f"{self.name} {version}: MANIFEST.json is the manifest of "
                f"{payload.get('name')!r} {payload.get('version')!r}, not of this version "
                "(copied or moved); refusing it. Run `raymlops registry verify`"
            )
        for filename in payload["files"]:
            if filename == MANIFEST or not _FILE_NAME.fullmatch(str(filename)):
                raise IntegrityError(
                    f"{self.name} {version}: MANIFEST.json names a file {filename!r} that is "
                    "not a plain file name of this version; refusing it"
                )
        return payload

    def info(self, version: str) -> VersionInfo:
        manifest = self.manifest(version)
        aliases = [a for a, v in self.aliases().items() if v == manifest["version"]]
        return VersionInfo(
            manifest["version"], manifest["created_at"], manifest.get("summary", {}), aliases
        )

    def list(self) -> list[VersionInfo]:
        """Every complete version with its aliases, oldest first."""
        aliases = self.aliases()
        out = []
        for version in self.versions():
            manifest = self.manifest(version)
            tags = [a for a, v in aliases.items() if v == version]
            out.append(
                VersionInfo(version, manifest["created_at"], manifest.get("summary", {}), tags)
            )
        return out

    def read_verified(
        self, version: str, filename: str, manifest: dict[str, Any] | None = None
    ) -> bytes:
        """The bytes of one file, after checking them against the manifest's sha256.

        Raises:
            IntegrityError: the file is missing, not in the manifest, or its content changed.
        """
        manifest = manifest or self.manifest(version)
        version = manifest["version"]
        entry = manifest["files"].get(filename)
        if entry is None:
            raise IntegrityError(f"{self.name} {version}: {filename} is not in the manifest")
        try:
            data = self.storage.read_bytes(self._p("versions", version, filename))
        except FileNotFoundError:
            raise IntegrityError(f"{self.name} {version}: {filename} is missing") from None
        if sha256(data) != entry["sha256"]:
            raise IntegrityError(
                f"{self.name} {version}: {filename} does not match its sha256 in the manifest "
                f"(tampered or corrupted); refusing to load it. Run `raymlops registry verify`"
            )
        return data

    def verify(self, version: str) -> VerifyReport:
        """Check every file of ``version`` against the manifest, and look for strangers."""
        version = self.resolve(version)
        problems: list[str] = []
        try:
            manifest = self.manifest(version)
        except (IntegrityError, RegistryError) as exc:
            return VerifyReport(version, False, 0, [str(exc)])
        for filename in manifest["files"]:
            try:
                self.read_verified(version, filename, manifest)
            except IntegrityError as exc:
                problems.append(str(exc))
        present = set(self.storage.list_dir(self._p("versions", version)))
        for extra in sorted(present - set(manifest["files"]) - {MANIFEST}):
            problems.append(f"{self.name} {version}: {extra} is not in the manifest")
        return VerifyReport(version, not problems, len(manifest["files"]), problems)

    def check_files(self, *, fix: bool = False) -> RegistryReport:
        """Check the registry's own files: ``aliases.json`` parses and every alias names a
        version that verifies, every line of ``audit.jsonl`` parses, and no staging folder of
        an interrupted ``register`` is left (removed when ``fix``)."""
        problems: list[str] = []
        notes: list[str] = []
        removed: list[str] = []
        try:
            aliases = self.aliases()
        except IntegrityError as exc:
            problems.append(str(exc))
            aliases = {}
        for alias, version in sorted(aliases.items()):
            try:
                report = self.verify(version)
            except RegistryError as exc:
                problems.append(f"aliases.json: {alias} -> {version}: {exc}")
                continue
            if not report.ok:
                problems.append(f"aliases.json: {alias} -> {version}, which does not verify")
        try:
            self.audit()
        except IntegrityError as exc:
            problems.append(str(exc))
        else:
            for alias in sorted({e.alias for e in self.audit()}):
                for event in self.uncommitted_events(alias):
                    notes.append(
                        f"audit.jsonl: {event.action} of {alias} to {event.version} at "
                        f"{event.time} never took effect (interrupted before aliases.json was "
                        "written); history and rollback skip it"
                    )
        for entry in self.storage.list_dir(self._p("versions")):
            if entry.startswith(STAGING_PREFIX):
                if fix:
                    self.storage.delete_dir(self._p("versions", entry))
                    removed.append(entry)
                else:
                    problems.append(
                        f"versions/{entry}: the staging folder of an interrupted register "
                        "(never a version); `raymlops registry verify --fix` removes it"
                    )
            elif not _VERSION.fullmatch(entry):
                notes.append(f"versions/{entry}: not a version name; ignored")
        return RegistryReport(problems, notes, removed)

    # -- aliases and audit -----------------------------------------------------------------------

    def aliases(self) -> dict[str, str]:
        """The aliases and the versions they name.

        Raises:
            IntegrityError: ``aliases.json`` does not parse, or names something that is not
                an alias or not a version name.
        """
        where = f"{self.location}/aliases.json"
        try:
            payload = self.storage.read_json(self._p("aliases.json"))
        except FileNotFoundError:
            return {}
        except ValueError:
            raise IntegrityError(
                f"{where} is not valid JSON (truncated or edited); the audit log "
                f"({self.location}/audit.jsonl) says where each alias was: rewrite it from "
                "there, e.g. {\"champion\": \"v3\"}"
            ) from None
        if not isinstance(payload, dict) or not all(
            isinstance(a, str) and isinstance(v, str) and _ALIAS.fullmatch(a) and _VERSION.fullmatch(v)
            for a, v in payload.items()
        ):
            raise IntegrityError(
                f"{where} must map alias names to version names ({{\"champion\": \"v3\"}}); "
                f"it holds {json.dumps(payload)[:200]}"
            )
        return dict(payload)

    def resolve(self, ref: str) -> str:
        """A version name for ``ref``: a version (``v3``, ``3``) or an alias (``champion``)."""
        if ref.isdigit():
            ref = f"v{ref}"
        if _VERSION.fullmatch(ref):
            if not self.storage.exists(self._p("versions", ref, MANIFEST)):
                known = ", ".join(self.versions()) or "none yet"
                raise RegistryError(f"{self.name}: no version {ref} (versions: {known})")
            return ref
        aliases = self.aliases()
        if not _ALIAS.fullmatch(ref) or ref not in aliases:
            names = ", ".join(sorted(aliases)) or "none yet"
            raise RegistryError(
                f"{self.name}: no alias {ref!r} (aliases: {names}); "
                "train with --promote or run `raymlops registry promote VERSION`"
            )
        return aliases[ref]

    def champion(self) -> str | None:
        """The champion's version, or None before the first promotion."""
        return self.aliases().get(CHAMPION)

    def audit(self) -> list[AuditEvent]:
        """Every alias move, oldest first.

        Raises:
            IntegrityError: a line does not parse as an event (truncated or edited).
        """
        try:
            text = self.storage.read_bytes(self._p("audit.jsonl")).decode(errors="replace")
        except FileNotFoundError:
            return []
        events = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                events.append(AuditEvent(**json.loads(line)))
            except (ValueError, TypeError):
                raise IntegrityError(
                    f"{self.location}/audit.jsonl line {number} is not an audit event "
                    f"(truncated or edited): {line[:120]!r}. Move the file aside and restore "
                    "it from a backup, or cut that line; `raymlops registry verify` checks it"
                ) from None
        return events

    def schema_change(self, alias: str, version: str) -> str | None:
        """How the requests ``version`` takes differ from those of the version ``alias`` names
        now (the champion's, while ``alias`` names none), or None (also when either version
        has no ``schema.json``). See :func:`raymlops.registry.compat.input_schema_change`."""
        aliases = self.aliases()
        current = aliases.get(alias) or aliases.get(CHAMPION)
        if current is None or current == version:
            return None
        schemas = []
        for name in (current, version):
            manifest = self.manifest(name)
            if SCHEMA not in manifest["files"]:
                return None
            schemas.append(json.loads(self.read_verified(name, SCHEMA, manifest)))
        change = input_schema_change(schemas[0], schemas[1])
        return None if change is None else f"{version} vs {current}: {change}"

    def _refuse_schema_change(self, alias: str, version: str) -> None:
        change = self.schema_change(alias, version)
        if change is not None:
            # serving keeps the request model of the version it was deployed with: every
            # request would be a 422 (or reach a model that cannot read it)
            raise SchemaChangeError(
                f"{self.name}: refusing to move {alias!r}: the input schema changed ({change}). "
                "Running servers keep the request model they were deployed with and would "
                "refuse every request. If the change is meant, add --allow-schema-change to "
                "`raymlops registry promote` or `rollback` "
                "(Registry.promote(..., allow_schema_change=True)), then deploy serving again "
                "(`raymlops serve --config C`, or `serve deploy`)"
            )

    def _move_alias(
        self,
        alias: str,
        version: str,
        *,
        action: str,
        reason: str,
        actor: str | None,
        allow_schema_change: bool = False,
    ) -> AuditEvent:
        report = self.verify(version)
        if not report.ok:
            raise IntegrityError(
                f"{self.name} {version} does not verify, so {alias!r} stays where it is:\n  "
                + "\n  ".join(report.problems)
            )
        if not allow_schema_change:
            self._refuse_schema_change(alias, version)
        aliases = self.aliases()
        event = AuditEvent(
            _now(), action, alias, version, aliases.get(alias), actor or _actor(), reason
        )
        lines = (
            self.storage.read_bytes(self._p("audit.jsonl"))
            if self.storage.exists(self._p("audit.jsonl"))
            else b""
        )
        self.storage.write_bytes(self._p("audit.jsonl"), lines + event.to_json().encode() + b"\n")
        self.storage.write_json(self._p("aliases.json"), {**aliases, alias: version})
        return event

    def promote(
        self,
        ref: str,
        *,
        alias: str = CHAMPION,
        reason: str = "",
        actor: str | None = None,
        allow_schema_change: bool = False,
    ) -> AuditEvent:
        """Point ``alias`` at a version that verifies, and log it.

        ``allow_schema_change`` lets the alias move to a version whose requests differ from
        the current one's (:meth:`schema_change`); serving must then be deployed again.

        Raises:
            RegistryError: unknown version or bad alias name.
            SchemaChangeError: the version takes other requests and the change is not allowed.
            IntegrityError: the version does not verify.
        """
        if not _ALIAS.fullmatch(alias) or _VERSION.fullmatch(alias):
            raise RegistryError(
                f"alias {alias!r} is not a valid name (lowercase letters, digits, - and _)"
            )
        # the probe takes seconds: it runs before the lock (versions are immutable), and again
        # under it only if the ref now names another version; a schema change is refused first
        if not allow_schema_change:
            self._refuse_schema_change(alias, self.resolve(ref))
        probed = self._probe(self.resolve(ref))
        with self.storage.lock(self._p(".lock")):
            version = self.resolve(ref)
            if version != probed:
                self._probe(version)
            return self._move_alias(
                alias,
                version,
                action="promote",
                reason=reason,
                actor=actor,
                allow_schema_change=allow_schema_change,
            )

    def committed_events(self, alias: str = CHAMPION) -> list[AuditEvent]:
        """The audit events of ``alias`` whose move took effect, oldest first.

        A move appends its event, then writes ``aliases.json``. A crash in between leaves an
        event for a move that never happened; it is recognised because the next move of the
        alias started from another version (its ``previous``), or, for the last event, because
        ``aliases.json`` names another version.
        """
        events = [e for e in self.audit() if e.alias == alias]
        current = self.aliases().get(alias)
        committed = []
        for event, following in zip(events, [*events[1:], None][: len(events)], strict=True):
            actual = following.previous if following is not None else current
            if actual == event.version:
                committed.append(event)
        return committed

    def uncommitted_events(self, alias: str = CHAMPION) -> list[AuditEvent]:
        """Audit events of ``alias`` for moves that never took effect (see committed_events)."""
        committed = self.committed_events(alias)
        return [e for e in self.audit() if e.alias == alias and e not in committed]

    def history(self, alias: str = CHAMPION) -> list[str]:
        """The versions ``alias`` pointed to, oldest first, rollbacks undone (from the audit,
        without events of moves that never took effect)."""
        stack: list[str] = []
        for event in self.committed_events(alias):
            if event.alias != alias:
                continue
            if event.action == "rollback" and stack:
                stack.pop()
                if not stack or stack[-1] != event.version:
                    stack.append(event.version)
            else:
                stack.append(event.version)
        return stack

    def rollback(
        self,
        *,
        alias: str = CHAMPION,
        reason: str = "",
        actor: str | None = None,
        allow_schema_change: bool = False,
    ) -> AuditEvent:
        """Point ``alias`` back at the version it had before its current one.

        Raises:
            RegistryError: the alias has no earlier version.
            SchemaChangeError: that version takes other requests (see :meth:`promote`).
        """
        if not allow_schema_change:
            self._refuse_schema_change(alias, self._rollback_target(alias))
        probed = self._probe(self._rollback_target(alias))
        with self.storage.lock(self._p(".lock")):
            target = self._rollback_target(alias)
            if target != probed:
                self._probe(target)
            return self._move_alias(
                alias,
                target,
                action="rollback",
                reason=reason,
                actor=actor,
                allow_schema_change=allow_schema_change,
            )

    def _rollback_target(self, alias: str) -> str:
        history = self.history(alias)
        current = self.aliases().get(alias)
        if current is not None and (not history or history[-1] != current):
            history.append(current)
        if len(history) < 2:
            raise RegistryError(f"{self.name}: {alias!r} has no earlier version to roll back to")
        return history[-2]

    def _probe(self, version: str) -> str:
        """Run the probe on ``version`` (raises to refuse it); returns ``version``.

        A version that does not verify is refused by :meth:`_move_alias` with the list of its
        problems; it is not loaded here.
        """
        if self.probe is not None and self.verify(version).ok:
            self.probe(self, version)
        return version
