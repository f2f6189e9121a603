"""The model registry: immutable, verifiable versions, aliases and an audit log on storage."""

from raymlops.registry.store import AuditEvent, Registry, RegistryReport, VerifyReport, VersionInfo

__all__ = ["AuditEvent", "Registry", "RegistryReport", "VerifyReport", "VersionInfo"]
