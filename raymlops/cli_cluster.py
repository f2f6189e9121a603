"""``raymlops cluster up|down|status`` and ``raymlops job submit|status|logs|stop``.

Two typer sub-apps registered by :mod:`raymlops.cli`; errors are :class:`RaymlopsError`
subclasses (exit 2 for a bad request, the job's own code for a failed job), printed by
``raymlops.cli.main``. No Ray at import time.

Example:
    $ raymlops cluster up --workers 2
    $ raymlops job submit train --config my-project/raymlops.yaml
    $ raymlops cluster down
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

__all__ = ["cluster_app", "job_app"]

cluster_app = typer.Typer(
    help="A local multi-node Ray cluster (head + N workers, token auth).", no_args_is_help=True
)
job_app = typer.Typer(
    help="Submit raymlops work as Ray jobs; follow, inspect and stop them.", no_args_is_help=True
)

out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JobAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="The cluster's dashboard/Jobs API, http://HOST:8265 (default: RAY_ADDRESS, "
        "else the cluster from `raymlops cluster up`).",
    ),
]


# -- cluster -------------------------------------------------------------------------------------


@cluster_app.command("up")
def cluster_up(
    workers: Annotated[int, typer.Option(help="Worker nodes to start.")] = 2,
    cpus: Annotated[float, typer.Option("--cpus", help="CPUs per worker node.")] = 1,
    gpus: Annotated[int, typer.Option("--gpus", help="GPUs per worker node.")] = 0,
    head_cpus: Annotated[
        float, typer.Option(help="CPUs on the head (0: it only schedules, as on a cluster).")
    ] = 0,
    object_store_mb: Annotated[int, typer.Option(help="Object store per node, MiB.")] = 256,
) -> None:
    """Start a head and N worker nodes on this machine as separate `ray start` processes."""
    from raymlops.cluster import up

    started = time.perf_counter()
    err.print(f"[cyan]▶[/] starting a head and {workers} worker node(s) ...")
    state = up(
        workers,
        cpus_per_worker=cpus,
        gpus_per_worker=gpus,
        head_cpus=head_cpus,
        object_store_mb=object_store_mb,
        on_node=lambda name: err.print(f"[green]✓[/] {name} joined"),
    )
    lines = [
        f"[green]✓[/] local cluster up in {time.perf_counter() - started:.0f}s: head + {workers} "
        f"worker(s) × {cpus:g} CPU" + (f", {gpus} GPU" if gpus else ""),
        f"  dashboard  [bold]{state.dashboard_url}[/]  (127.0.0.1 only; token required)",
        f"  token      {state.token_path}  (mode 0600; RAY_AUTH_TOKEN_PATH for Ray's own CLI)",
        f"  GCS        {state.gcs_address}",
        "",
        f"next  raymlops job submit train --config C --address {state.dashboard_url}",
        f"      RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={state.token_path} ray job submit "
        f"--address {state.dashboard_url} --working-dir . -- python -m raymlops train --config C",
        "      raymlops cluster status",
        "      raymlops cluster down",
    ]
    out.print(Panel("\n".join(lines), title="raymlops cluster up", expand=False))


@cluster_app.command("address")
def cluster_address() -> None:
    """Print the local cluster's dashboard / Jobs API URL (for `ray job submit --address`)."""
    from raymlops.cluster import ClusterError, ClusterState, raymlops_home

    state = ClusterState.load(raymlops_home())
    if state is None:
        raise ClusterError("no local cluster is running: start one with `raymlops cluster up`")
    out.print(state.dashboard_url)


@cluster_app.command("status")
def cluster_status() -> None:
    """The local cluster's processes and the nodes Ray lists alive."""
    from raymlops.cluster import status

    report = status()
    table = Table(title=f"local cluster at {report.state.dashboard_url}", title_justify="left")
    for column in ("node", "pid", "process"):
        table.add_column(column)
    for node in report.state.nodes:
        running = report.processes.get(node.name)
        table.add_row(node.name, str(node.pid), "[green]running[/]" if running else "[red]gone[/]")
    out.print(table)
    if report.error:
        err.print(f"[yellow]warning:[/] {escape(report.error)}")
    else:
        cpus = sum(float((n.get("resources_total") or {}).get("CPU", 0)) for n in report.nodes)
        out.print(f"{len(report.nodes)} node(s) alive, {cpus:g} CPU in all")
    if not all(report.processes.values()):
        err.print("some nodes are gone: `raymlops cluster down`, then `raymlops cluster up`")
        raise typer.Exit(1)


@cluster_app.command("down")
def cluster_down() -> None:
    """Stop every process `cluster up` started (by PID); leaves no Ray process behind."""
    from raymlops.cluster import ClusterError, down

    report = down()
    if report.left:
        raise ClusterError(
            f"{len(report.left)} process(es) would not stop: PIDs {report.left}; "
            "check them with `ps -p`"
        )
    out.print(f"[green]✓[/] local cluster stopped ({len(report.stopped)} processes)")


# -- jobs ----------------------------------------------------------------------------------------


def _write(chunk: str) -> None:
    sys.stdout.write(chunk)
    sys.stdout.flush()


@job_app.command(
    "submit", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def job_submit(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="train, retrain or predict.")],
    config: Annotated[Path, typer.Option("--config", "-c", help="Project config (YAML).")],
    address: JobAddressOpt = None,
    working_dir: Annotated[
        Path | None,
        typer.Option(help="Folder uploaded as the job's working dir (default: this one)."),
    ] = None,
    submission_id: Annotated[
        str | None, typer.Option(help="The job's id; Ray runs one job per id.")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option(help="More paths to leave out (gitignore syntax).")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Follow the logs until the job ends.")
    ] = True,
) -> None:
    """Submit a train, retrain or predict job (extra arguments after -- go to the job).

    The exit code mirrors the job: 0 succeeded, the job's own code when it failed, 5 stopped.
    """
    from raymlops.jobs import follow, jobs_address, plan_job, submit

    target = jobs_address(address)
    plan = plan_job(
        kind,
        config,
        working_dir=working_dir,
        extra=list(ctx.args),
        submission_id=submission_id,
        excludes=exclude,
        address=target,
    )
    for warning in plan.warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}")
    started = time.perf_counter()
    jobs, job_id = submit(plan, target)
    err.print(f"[green]✓[/] submitted [bold]{job_id}[/] to {target}")
    err.print(f"  entrypoint  {escape(plan.entrypoint)}")
    err.print(f"  working dir {plan.working_dir}")
    if not wait:
        out.print(job_id)
        err.print(f"next: raymlops job logs {job_id} --follow --address {target}")
        return
    try:
        follow(jobs, job_id, _write)
    except KeyboardInterrupt:
        err.print(
            f"\nstopped following; the job keeps running. Stop it with "
            f"`raymlops job stop {job_id} --address {target}`"
        )
        raise typer.Exit(130) from None
    out.print(
        Panel(
            f"[green]✓[/] job {job_id} SUCCEEDED in {time.perf_counter() - started:.0f}s\n"
            f"  logs    raymlops job logs {job_id} --address {target}\n"
            f"  next    raymlops registry list --config {config}",
            title=f"raymlops job submit {kind}",
            expand=False,
        )
    )


@job_app.command("status")
def job_status(
    job_id: Annotated[str, typer.Argument(help="The submission id.")],
    address: JobAddressOpt = None,
) -> None:
    """A job's status, entry point and timing."""
    from raymlops.jobs import client, status_name

    jobs = client(address)
    info = jobs.info(job_id)
    table = Table(show_header=False, box=None)
    table.add_row("job", job_id)
    table.add_row("status", status_name(info.status))
    table.add_row("entrypoint", escape(info.entrypoint or "-"))
    table.add_row("message", escape(info.message or "-"))
    if getattr(info, "driver_exit_code", None) is not None:
        table.add_row("exit code", str(info.driver_exit_code))
    if info.start_time:
        end = (info.end_time or time.time() * 1000) / 1000
        table.add_row("duration", f"{end - info.start_time / 1000:.1f}s")
    out.print(table)


@job_app.command("logs")
def job_logs(
    job_id: Annotated[str, typer.Argument(help="The submission id.")],
    address: JobAddressOpt = None,
    follow_logs: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream until the job ends; exit mirrors it.")
    ] = False,
) -> None:
    """A job's logs (with --follow: live, and the exit code mirrors the job)."""
    from raymlops.jobs import client, follow

    jobs = client(address)
    if follow_logs:
        follow(jobs, job_id, _write)
    else:
        _write(jobs.logs(job_id))


@job_app.command("stop")
def job_stop(
    job_id: Annotated[str, typer.Argument(help="The submission id.")],
    address: JobAddressOpt = None,
) -> None:
    """Ask Ray to stop a job (its processes get SIGTERM, then SIGKILL)."""
    from raymlops.jobs import client, status_name

    jobs = client(address)
    if jobs.stop(job_id):
        out.print(f"[green]✓[/] stop requested for {job_id}")
    else:
        status = status_name(jobs.info(job_id).status)
        out.print(f"{job_id} had already ended ({status}); nothing to stop")
