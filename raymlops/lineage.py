"""Where a version came from: code, packages and environment facts for lineage.json (pure).

Example:
    >>> sorted(package_versions())[:2]
    ['evidently', 'numpy']
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess

__all__ = ["code_version", "package_versions"]

_PACKAGES = (
    "raymlops",
    "ray",
    "xgboost",
    "scikit-learn",
    "pandas",
    "numpy",
    "pyarrow",
    "skops",
    "evidently",
    "pydantic",
)


def package_versions() -> dict[str, str]:
    """Installed versions of the packages a model depends on."""
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    out["python"] = platform.python_version()
    return out


def code_version(cwd: str | None = None) -> dict[str, object]:
    """The git commit of ``cwd`` (and whether the tree had changes), if it is a git checkout."""
    cwd = cwd or os.getcwd()

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"git_commit": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": bool(status)}
