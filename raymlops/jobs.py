"""raymlops work as Ray jobs: a thin layer over Ray's ``JobSubmissionClient``.

``submit`` sends the project folder as the job's ``working_dir`` (without virtualenvs, VCS
folders, caches, local registries and data the job does not read), with the cluster's token,
under a ``submission_id`` (Ray refuses a second job with the same one), and the entry point
``python jobs/<kind>.py --config <config>`` (``python -m raymlops <kind>`` where the working
dir has no ``jobs/`` folder). :func:`follow` streams the logs and returns an exit code that
mirrors the job's final status.

The pure parts (entry point, excludes, address, exit codes) need no Ray; the client is imported
only when a request is made.

Example:
    >>> plan = plan_job("train", Path("proj/raymlops.yaml"), working_dir=Path("proj"))  # doctest: +SKIP
    >>> job_id = submit(plan, address="http://127.0.0.1:8265")  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import secrets
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raymlops.cluster import ClusterState, raymlops_home, read_token
from raymlops.errors import RaymlopsError

__all__ = [
    "JOB_KINDS",
    "JobError",
    "JobFailedError",
    "JobPlan",
    "default_excludes",
    "entrypoint",
    "exit_code_for",
    "follow",
    "jobs_address",
    "plan_job",
    "status_name",
    "submit",
]

# the job kinds and their entry points; a kind without a CLI fallback needs jobs/ shipped
JOB_KINDS: dict[str, tuple[str, str | None]] = {
    "train": ("jobs/train.py", "train"),
    "retrain": ("jobs/retrain.py", "retrain"),
    "predict": ("jobs/batch_predict.py", "predict"),
}
EXIT_STOPPED = 5
_TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}

# never worth uploading: environments, VCS, caches, build output, local registries
_ALWAYS_EXCLUDED = [
    ".git/",
    ".venv/",
    "venv/",
    "**/__pycache__/",
    "*.pyc",
    ".pytest_cache/",
    ".ruff_cache/",
    ".mypy_cache/",
    ".hypothesis/",
    "*.egg-info/",
    "build/",
    "dist/",
    "node_modules/",
    ".raymlops/",
    "demo/",
    # secrets never travel with a job: dotfiles and dot-folders (.env, .aws/, .netrc, ...),
    # private keys and certificates, token and credential files, and secrets/ folders. A job
    # that needs a secret gets it from the cluster (environment, instance role, Kubernetes
    # Secret), not from the uploaded copy of a laptop's folder. (Not ".*": Ray matches the
    # working dir itself as ".", and ".*" left every job with an empty package.)
    ".[!.]*",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.jks",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "*token",
    "*token.txt",
    "*.token",
    "*credentials*",
    "*.kubeconfig",
    "kubeconfig",
    "secrets/",
]


class JobError(RaymlopsError):
    """A job request that cannot be made: bad kind, config, address or token; a duplicate id."""

    exit_code = 2


class JobFailedError(RaymlopsError):
    """The job ended without success; ``exit_code`` mirrors how (see :func:`exit_code_for`)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def exit_code_for(status: str, driver_exit_code: int | None = None) -> int:
    """The CLI's exit code for a job's final status.

    SUCCEEDED 0; FAILED the entry point's own exit code (so a data error inside the job is 3
    here too), or 1 when the job failed before its entry point ran; STOPPED 5.

    Example:
        >>> exit_code_for("SUCCEEDED"), exit_code_for("FAILED", 3), exit_code_for("STOPPED")
        (0, 3, 5)
    """
    if status == "SUCCEEDED":
        return 0
    if status == "STOPPED":
        return EXIT_STOPPED
    return driver_exit_code if driver_exit_code and driver_exit_code > 0 else 1


def status_name(status: Any) -> str:
    """``JobStatus.SUCCEEDED`` -> ``"SUCCEEDED"`` (the enum's value; plain strings pass)."""
    return str(getattr(status, "value", status))


# -- planning (pure) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class JobPlan:
    """Everything about a job submission that is decided before talking to a cluster."""

    kind: str
    config: Path
    working_dir: Path
    entrypoint: str
    excludes: list[str]
    submission_id: str
    warnings: list[str] = field(default_factory=list)
    #: the job's environment (``RAYMLOPS_STORAGE`` for a relative registry on a local cluster)
    env_vars: dict[str, str] = field(default_factory=dict)


def entrypoint(kind: str, config_rel: str, working_dir: Path, extra: list[str]) -> str:
    """The job's shell command, run by Ray in the uploaded working dir on the cluster.

    Example:
        >>> entrypoint("retrain", "proj/raymlops.yaml", Path("."), ["--trigger-window", "3"])
        'python jobs/retrain.py --config proj/raymlops.yaml --trigger-window 3'

    Raises:
        JobError: an unknown kind, or ``retrain`` without ``jobs/retrain.py`` in the working dir.
    """
    if kind not in JOB_KINDS:
        raise JobError(f"unknown job kind {kind!r}: choose one of {', '.join(JOB_KINDS)}")
    script, command = JOB_KINDS[kind]
    if (working_dir / script).is_file() or command is None:
        if command is None and not (working_dir / script).is_file():
            raise JobError(
                f"job kind {kind!r} runs {script}, which is not in the working dir "
                f"{working_dir}; submit from the raymlops project folder (--working-dir)"
            )
        argv = ["python", script]
    else:  # an installed raymlops on the cluster: the CLI is the same code path
        argv = ["python", "-m", "raymlops", command]
    return shlex.join([*argv, "--config", config_rel, *extra])


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _is_local(uri: str) -> bool:
    return "://" not in uri and not uri.startswith("sklearn:")


def default_excludes(working_dir: Path, storage: str, source: str) -> list[str]:
    """Paths (gitignore syntax) left out of the uploaded working dir.

    Environments, VCS folders and caches always; a local registry inside the working dir; and
    ``data/`` unless the config reads its data from there.

    Example:
        >>> "data/" in default_excludes(Path("."), "s3://b/reg", "s3://b/data/*.parquet")
        True
    """
    excludes = list(_ALWAYS_EXCLUDED)
    if _is_local(storage) and _inside(Path(storage), working_dir):
        excludes.append(f"/{Path(storage).resolve().relative_to(working_dir.resolve())}/")
    data_dir = working_dir / "data"
    reads_data_dir = _is_local(source) and _inside(Path(source.split("*")[0] or "."), data_dir)
    if not reads_data_dir:
        excludes.append("/data/")
    return excludes


def _declared_storage(config: Path) -> str:
    from raymlops.config import read_yaml

    raw = read_yaml(config)  # the config's own guarded loader: no YAML alias bomb here either
    value = raw.get("storage") if isinstance(raw, dict) else None
    return str(value) if value else "./.raymlops"  # the config's default


def _submission_id(kind: str, name: str) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"raymlops-{kind}-{name}-{stamp}-{secrets.token_hex(2)}"


def plan_job(
    kind: str,
    config: Path,
    *,
    working_dir: Path | None = None,
    extra: list[str] | None = None,
    submission_id: str | None = None,
    excludes: list[str] | None = None,
    address: str | None = None,
) -> JobPlan:
    """Check the request and decide the entry point, excludes and submission id.

    Raises:
        JobError: unknown kind, a config outside the working dir, or a local registry inside
            it (the job would write it into a temporary copy on the cluster and lose it).
        ConfigError: the config is missing or invalid.
    """
    from raymlops.config import load_config
    from raymlops.loopback import is_loopback_address
    from raymlops.storage import local_storage_warning

    if kind not in JOB_KINDS:
        raise JobError(f"unknown job kind {kind!r}: choose one of {', '.join(JOB_KINDS)}")
    working_dir = (working_dir or Path.cwd()).resolve()
    if not config.is_file():
        raise JobError(f"config {config} does not exist (job kind {kind}); check --config")
    if not _inside(config, working_dir):
        raise JobError(
            f"config {config} is outside the working dir {working_dir}, which is what the job "
            "gets; run from a folder that holds it, or pass --working-dir"
        )
    cfg = load_config(config)
    rel = config.resolve().relative_to(working_dir).as_posix()
    warnings: list[str] = []
    env_vars: dict[str, str] = {}
    if _is_local(cfg.storage):
        # a relative folder is read from the config's folder, which on the cluster is the job's
        # temporary copy of the working dir: the registry would be written there and lost. On a
        # cluster on this machine every node sees this machine's folders, so the job gets the
        # absolute folder (RAYMLOPS_STORAGE overrides `storage:`, see load_config)
        declared = _declared_storage(config)
        if not Path(declared).expanduser().is_absolute():
            if not is_loopback_address(address):
                raise JobError(
                    f"storage {declared!r} in {config} is a relative folder: in the job it "
                    "points into the temporary copy of the working dir on the cluster, and the "
                    "registry would be lost. Set `storage:` to s3://bucket/prefix (any cluster) "
                    "or to an absolute folder every node sees"
                )
            env_vars["RAYMLOPS_STORAGE"] = cfg.storage
        else:
            message = local_storage_warning(cfg.storage, address or "(default cluster)")
            if message:
                warnings.append(message)
    source = cfg.data.source
    if _is_local(source) and not _inside(Path(source.split("*")[0] or "."), working_dir):
        warnings.append(
            f"data source {source!r} is a local path outside the working dir: every node "
            "must see it (true on a local cluster on this machine); on a cloud cluster use s3://"
        )
    return JobPlan(
        kind=kind,
        config=config,
        working_dir=working_dir,
        entrypoint=entrypoint(kind, rel, working_dir, list(extra or [])),
        excludes=default_excludes(working_dir, cfg.storage, source) + list(excludes or []),
        submission_id=submission_id or _submission_id(kind, cfg.name),
        warnings=warnings,
        env_vars=env_vars,
    )


# -- the cluster ---------------------------------------------------------------------------------


def jobs_address(address: str | None) -> str:
    """The Jobs API address: ``--address``, ``RAY_ADDRESS`` when it is an http URL, or the
    dashboard of the local cluster started by ``raymlops cluster up``.

    Raises:
        JobError: none of these is set, or a ``ray://`` address (Ray Client, not the Jobs API).
    """
    chosen = address or os.environ.get("RAY_ADDRESS", "").strip() or None
    if chosen is None:
        state = ClusterState.load(raymlops_home())
        if state is not None:
            return state.dashboard_url
        raise JobError(
            "no cluster to submit to: pass --address http://HOST:8265 (the dashboard address), "
            "set RAY_ADDRESS, or start a local cluster with `raymlops cluster up --workers 2`"
        )
    if chosen.startswith("ray://"):
        raise JobError(
            f"{chosen} is a Ray Client address; jobs go to the dashboard: --address http://HOST:8265"
        )
    return chosen if "://" in chosen else f"http://{chosen}"


class _Client:
    """``JobSubmissionClient`` with raymlops's token lookup and error messages."""

    def __init__(self, address: str) -> None:
        from ray.job_submission import JobSubmissionClient

        self.address = address
        self.token, self.token_source = read_token()
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            self.client = self._call(JobSubmissionClient, address, headers=headers)
        except JobError:
            raise
        except (ConnectionError, OSError, RuntimeError, ValueError) as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: Exception) -> JobError:
        return JobError(
            f"cannot reach the Ray Jobs API at {self.address} ({exc}). Is the cluster running? "
            "Start a local one with `raymlops cluster up --workers 2` and use the dashboard "
            "address it prints, or check --address / RAY_ADDRESS"
        )

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from ray.exceptions import AuthenticationError

        try:
            return fn(*args, **kwargs)
        except AuthenticationError as exc:
            raise self._auth_error(str(exc)) from None

    def _auth_error(self, detail: str) -> JobError:
        if self.token is None:
            why = f"no token was sent: none found (looked in {self.token_source})"
        else:
            why = f"the token from {self.token_source} was refused"
        status = "403 forbidden" if "403" in detail or "Forbidden" in detail else "401 unauthorized"
        return JobError(
            f"the cluster at {self.address} refused the request ({status}): {why}. Set "
            "RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the cluster's token: `raymlops cluster "
            "up` keeps it in ~/.raymlops/auth_token; on a launcher or KubeRay cluster get it "
            "with `ray get-auth-token` or from its Kubernetes secret"
        )

    def ray_cli_auth(self) -> str:
        """The environment Ray's own CLI needs to send the token this client found."""
        if self.token is None:
            return ""
        if self.token_source == "RAY_AUTH_TOKEN":  # noqa: S105 - a variable name, not a secret
            return "RAY_AUTH_MODE=token "
        return f"RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={self.token_source} "

    def submit(self, plan: JobPlan) -> str:
        runtime_env: dict[str, Any] = {
            "working_dir": str(plan.working_dir),
            "excludes": plan.excludes,
        }
        if plan.env_vars:
            runtime_env["env_vars"] = dict(plan.env_vars)
        try:
            return self._call(
                self.client.submit_job,
                entrypoint=plan.entrypoint,
                submission_id=plan.submission_id,
                runtime_env=runtime_env,
                metadata={"raymlops_kind": plan.kind, "raymlops_config": str(plan.config)},
            )
        except RuntimeError as exc:
            if "already exists" in str(exc):
                status = self.info(plan.submission_id).status
                raise JobError(
                    f"job {plan.submission_id} already exists on {self.address} (status "
                    f"{status}); nothing new was submitted. Follow it with `raymlops job logs "
                    f"{plan.submission_id} --follow`, or choose another --submission-id"
                ) from None
            raise JobError(f"the cluster at {self.address} refused the job: {exc}") from None

    def info(self, job_id: str) -> Any:
        try:
            return self._call(self.client.get_job_info, job_id)
        except RuntimeError as exc:
            if "404" in str(exc) or "does not exist" in str(exc):
                raise JobError(
                    f"no job {job_id!r} on {self.address}; list jobs with "
                    f"`{self.ray_cli_auth()}ray job list --address {self.address}`"
                ) from None
            raise JobError(f"cannot read job {job_id}: {exc}") from None

    def logs(self, job_id: str) -> str:
        self.info(job_id)  # a clear "no such job" first
        return self._call(self.client.get_job_logs, job_id)

    def stop(self, job_id: str) -> bool:
        self.info(job_id)
        return self._call(self.client.stop_job, job_id)

    def tail(self, job_id: str, write: Callable[[str], None]) -> None:
        async def pump() -> None:
            async for chunk in self.client.tail_job_logs(job_id):
                write(chunk)

        self.info(job_id)
        try:
            self._call(asyncio.run, pump())
        except JobError:
            raise
        except Exception as exc:  # the log stream broke (proxy, network): poll instead
            write(f"\n[raymlops] log stream lost ({exc}); waiting for the job to end ...\n")
            while status_name(self.info(job_id).status) not in _TERMINAL:
                time.sleep(2.0)
            logs = self._call(self.client.get_job_logs, job_id)
            write(logs)


def client(address: str | None) -> _Client:
    """A Jobs API client for ``address`` (see :func:`jobs_address`), token attached."""
    return _Client(jobs_address(address))


def submit(plan: JobPlan, address: str | None) -> tuple[_Client, str]:
    """Submit ``plan``; returns the client and the job's submission id."""
    jobs = client(address)
    return jobs, jobs.submit(plan)


def follow(
    jobs: _Client,
    job_id: str,
    write: Callable[[str], None],
    *,
    tail_lines: int = 25,
) -> Any:
    """Stream the job's logs until it ends; returns its final info.

    Raises:
        JobFailedError: the job failed or was stopped; the message ends with its last log lines.
    """
    jobs.tail(job_id, write)
    info = jobs.info(job_id)
    # the log stream can end a moment before the status is final
    for _ in range(50):
        if status_name(info.status) in _TERMINAL:
            break
        time.sleep(0.2)
        info = jobs.info(job_id)
    status = status_name(info.status)
    code = exit_code_for(status, getattr(info, "driver_exit_code", None))
    if code:
        last = "\n".join(jobs.logs(job_id).rstrip().splitlines()[-tail_lines:])
        raise JobFailedError(
            f"job {job_id} {status}"
            + (
                f" (exit code {info.driver_exit_code})"
                if getattr(info, "driver_exit_code", None)
                else ""
            )
            + f": {info.message or 'no message'}\n--- last {tail_lines} log lines ---\n{last}\n"
            f"--- full logs: raymlops job logs {job_id} --address {jobs.address}",
            code,
        )
    return info
