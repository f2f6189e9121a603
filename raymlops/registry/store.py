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

from raymlops.errors import IntegrityError, RegistryError
from raymlops.storage import Storage

__all__ = ["MANIFEST", "AuditEvent", "Registry", "VerifyReport", "VersionInfo"]

MANIFEST = "MANIFEST.json"
CHAMPION = "champion"
_VERSION = re.compile(r"^v(\d+)$")
_ALIAS = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


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
            if (m := _VERSION.match(entry))
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
        before_manifest: Any = None,
    ) -> str:
        """Write a new immutable version holding ``files``; returns its name (``vN``).

        ``before_manifest`` is a test hook called after the files and before the manifest,
        to simulate a crash in between.
        """
        if MANIFEST in files:
            raise ValueError(f"{MANIFEST} is written by the registry")
        with self.storage.lock(self._p(".lock")):
            numbers = self._numbers()
            version = f"v{(numbers[-1] if numbers else 0) + 1}"
            local = self.storage.is_local
            folder = self._p("versions", f".staging-{uuid.uuid4().hex}" if local else version)
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
                    self.storage.move(folder, self._p("versions", version))
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

    # -- aliases and audit -----------------------------------------------------------------------

    def aliases(self) -> dict[str, str]:
        try:
            payload = self.storage.read_json(self._p("aliases.json"))
        except FileNotFoundError:
            return {}
        return dict(payload) if isinstance(payload, dict) else {}

    def resolve(self, ref: str) -> str:
        """A version name for ``ref``: a version (``v3``, ``3``) or an alias (``champion``)."""
        if ref.isdigit():
            ref = f"v{ref}"
        if _VERSION.match(ref):
            if not self.storage.exists(self._p("versions", ref, MANIFEST)):
                known = ", ".join(self.versions()) or "none yet"
                raise RegistryError(f"{self.name}: no version {ref} (versions: {known})")
            return ref
        aliases = self.aliases()
        if ref not in aliases:
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
        try:
            text = self.storage.read_bytes(self._p("audit.jsonl")).decode()
        except FileNotFoundError:
            return []
        return [AuditEvent(**json.loads(line)) for line in text.splitlines() if line.strip()]

    def _move_alias(
        self, alias: str, version: str, *, action: str, reason: str, actor: str | None
    ) -> AuditEvent:
        report = self.verify(version)
        if not report.ok:
            raise IntegrityError(
                f"{self.name} {version} does not verify, so {alias!r} stays where it is:\n  "
                + "\n  ".join(report.problems)
            )
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
        self, ref: str, *, alias: str = CHAMPION, reason: str = "", actor: str | None = None
    ) -> AuditEvent:
        """Point ``alias`` at a version that verifies, and log it.

        Raises:
            RegistryError: unknown version or bad alias name.
            IntegrityError: the version does not verify.
        """
        if not _ALIAS.match(alias) or _VERSION.match(alias):
            raise RegistryError(
                f"alias {alias!r} is not a valid name (lowercase letters, digits, - and _)"
            )
        # the probe takes seconds: it runs before the lock (versions are immutable), and again
        # under it only if the ref now names another version
        probed = self._probe(self.resolve(ref))
        with self.storage.lock(self._p(".lock")):
            version = self.resolve(ref)
            if version != probed:
                self._probe(version)
            return self._move_alias(alias, version, action="promote", reason=reason, actor=actor)

    def history(self, alias: str = CHAMPION) -> list[str]:
        """The versions ``alias`` pointed to, oldest first, rollbacks undone (from the audit)."""
        stack: list[str] = []
        for event in self.audit():
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
        self, *, alias: str = CHAMPION, reason: str = "", actor: str | None = None
    ) -> AuditEvent:
        """Point ``alias`` back at the version it had before its current one.

        Raises:
            RegistryError: the alias has no earlier version.
        """
        probed = self._probe(self._rollback_target(alias))
        with self.storage.lock(self._p(".lock")):
            target = self._rollback_target(alias)
            if target != probed:
                self._probe(target)
            return self._move_alias(alias, target, action="rollback", reason=reason, actor=actor)

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
