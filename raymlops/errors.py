"""Errors a user can cause, each with the exit code the CLI returns for it.

Every error carries a message meant for people: it names the key, path, column or version at
fault and says how to fix it. The CLI prints ``str(error)`` and exits with ``error.exit_code``;
nothing here prints or exits by itself.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataValidationError",
    "IntegrityError",
    "RaymlopsError",
    "RegistryError",
    "SchemaChangeError",
    "StorageError",
    "UsageError",
]


class RaymlopsError(Exception):
    """Base class of the errors raymlops reports to users (never a bare traceback)."""

    exit_code = 1


class ConfigError(RaymlopsError):
    """The project config is missing, unreadable or invalid."""

    exit_code = 2


class UsageError(RaymlopsError):
    """A command asked for something that cannot work as asked (a missing address, nothing to show)."""

    exit_code = 2


class StorageError(RaymlopsError):
    """The storage URI cannot be reached or written."""

    exit_code = 2


class RegistryError(RaymlopsError):
    """A registry request that cannot be served: unknown version or alias, nothing to roll back."""

    exit_code = 2


class SchemaChangeError(RegistryError):
    """A promotion or rollback to a version that takes other requests than the one serving."""


class DataValidationError(RaymlopsError):
    """The data does not match the schema. ``report`` holds the per-column findings."""

    exit_code = 3

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report


class IntegrityError(RaymlopsError):
    """A registry file does not match its manifest (tampered, truncated or missing)."""

    exit_code = 4
