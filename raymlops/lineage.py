"""Where a version came from: code, packages and environment facts for lineage.json (pure).

:func:`redact_uri` takes credentials out of a storage or data URI before it is printed or
stored (config errors, lineage.json's config dump).

Example:
    >>> sorted(package_versions())[:2]
    ['evidently', 'numpy']
    >>> redact_uri("s3://KEY:SECRET@bucket/prefix?region=us-east-1&secret_key=abc")
    's3://***@bucket/prefix?region=us-east-1&secret_key=***'
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
from urllib.parse import urlsplit, urlunsplit

__all__ = ["code_version", "package_versions", "redact_uri"]

# query parameters that carry secrets in pyarrow/fsspec URIs (access_key, secret_key,
# session_token, sas_token, password, credential...)
_SECRET_PARAM = re.compile(r"(key|secret|token|password|passwd|credential|signature|sig)", re.I)

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


def redact_uri(value: str) -> str:
    """``value`` with the user-info of a URI (``user:password@``) and the values of secret
    query parameters replaced by ``***``; anything that is not such a URI comes back as is."""
    if "://" not in value:
        return value
    try:
        parts = urlsplit(value)
    except ValueError:
        return value
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "&".join(
        f"{k}=***" if _SECRET_PARAM.search(k) else f"{k}={v}" if sep else k
        for k, sep, v in (item.partition("=") for item in parts.query.split("&") if item)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
