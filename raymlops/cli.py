"""The ``raymlops`` command line: a thin layer over the library (no Ray at import time).

Exit codes: 0 ok; 1 unexpected failure; 2 bad usage, config, storage or registry request;
3 data that breaks the schema; 4 a registry file that fails its sha256 check.

Example:
    $ raymlops init my-project
    $ raymlops train --config my-project/raymlops.yaml --promote
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from raymlops.cli_cluster import cluster_app, job_app
from raymlops.errors import DataValidationError, RaymlopsError, UsageError
from raymlops.lineage import redact_uri
from raymlops.output import RayLog

try:  # typer >= 0.20 vendors click; older releases use click itself
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import ClickException  # type: ignore[no-redef]

__all__ = ["app", "main"]

app = typer.Typer(
    name="raymlops",
    help="The whole life of a tabular model on Ray: data, Tune training, registry, serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(
    help="Check the project config, or print its JSON schema.", no_args_is_help=True
)
registry_app = typer.Typer(
    help="List, inspect, verify, promote and roll back versions.", no_args_is_help=True
)
monitor_app = typer.Typer(
    help="The DriftMonitor actor: start it, see its windows, decisions and jobs, stop it.",
    no_args_is_help=True,
)
app.add_typer(config_app, name="config")
app.add_typer(registry_app, name="registry")
app.add_typer(monitor_app, name="monitor")
app.add_typer(cluster_app, name="cluster")
app.add_typer(job_app, name="job")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Project config (YAML).")]
VerboseOpt = Annotated[
    bool,
    typer.Option(
        "--verbose", "-v", help="Show Ray's own output here instead of in the command's log file."
    ),
]
AddressOpt = Annotated[
    str | None,
    typer.Option("--address", help="Ray address (default: RAY_ADDRESS, else a local Ray)."),
]
AllowSchemaChangeOpt = Annotated[
    bool,
    typer.Option(
        "--allow-schema-change",
        help="Move the alias to a version whose input columns differ; then deploy serving again.",
    ),
]


#: Ray's output of the running command, when it goes to a log file (see raymlops.output)
_ray_log: RayLog | None = None
#: the progress display of the stage that runs now, on a terminal
_live: list[Any] = []


def _quiet_ray(command: str, verbose: bool) -> Path | None:
    """Send Ray's output to a log file until the command ends, unless ``--verbose`` (or this
    process is a Ray job driver, whose log is the place for it); returns the file's path."""
    global _ray_log
    from raymlops.output import capture, in_ray_job

    if _ray_log is None and not verbose and not in_ray_job():
        _ray_log = capture(command, [out, err])
    return _ray_log.path if _ray_log else None


def _end_quiet_ray(*, restore: bool) -> Path | None:
    """The log's path, once the command is over. ``restore=False`` (the process ends next)
    leaves fds 1 and 2 on the log, so that Ray's lines printed while it shuts down at exit
    go there too."""
    global _ray_log
    _stop_live()
    log, _ray_log = _ray_log, None
    if log is None:
        return None
    if restore:
        log.restore()
    return log.path


def _stop_live() -> None:
    while _live:
        _live.pop().stop()


def _check_data(cfg: Any, source: str, key: str) -> None:
    """The data's header against the schema, before Ray starts (a typo in the target is a
    one-second error, not a failed training run)."""
    from raymlops.data.sources import resolve_source
    from raymlops.preflight import check_columns, read_header
    from raymlops.schema import Schema

    check_columns(Schema.from_config(cfg), read_header(resolve_source(source)), key=key)


def _check_model(cfg: Any, alias: str, config: Path) -> None:
    """The model and the alias or version to load exist, before Ray starts."""
    from raymlops.preflight import check_model
    from raymlops.registry import Registry
    from raymlops.storage import Storage

    # not pipeline.open_registry: importing the training package (scikit-learn) takes seconds
    check_model(Registry(Storage.from_uri(cfg.storage), cfg.name), alias, str(config))


def _load(config: Path):  # type: ignore[no-untyped-def]
    from raymlops.config import load_config

    return load_config(config)


def _registry(config: Path):  # type: ignore[no-untyped-def]
    from raymlops.pipeline import open_registry

    return open_registry(_load(config))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


# -- init / config -------------------------------------------------------------------------------


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Folder for the new project.")],
    example: Annotated[
        str, typer.Option(help="churn (CSV with categories and nulls) or breast_cancer.")
    ] = "churn",
    force: Annotated[bool, typer.Option(help="Overwrite an existing raymlops.yaml.")] = False,
) -> None:
    """Write an example project (config + data) to edit and train."""
    from raymlops.examples import EXAMPLES, write_example

    if example not in EXAMPLES:
        raise typer.BadParameter(f"choose one of {', '.join(EXAMPLES)}", param_hint="--example")
    if (directory / "raymlops.yaml").exists() and not force:
        raise UsageError(f"{directory / 'raymlops.yaml'} exists; use --force to overwrite it")
    config = write_example(directory, example)
    out.print(
        f"[green]✓[/] wrote {config}"
        + (f" and {directory / 'data' / 'train.csv'}" if example == "churn" else "")
    )
    out.print(f"next: [bold]raymlops config check --config {config}[/]")
    out.print(f"      [bold]raymlops train --config {config} --promote[/]")


@config_app.command("check")
def config_check(config: ConfigOpt) -> None:
    """Validate the config, the data source and the storage, without training."""
    from raymlops.data.sources import resolve_source
    from raymlops.preflight import check_columns, check_retrain_source, read_header
    from raymlops.schema import Schema
    from raymlops.storage import Storage

    cfg = _load(config)
    schema = Schema.from_config(cfg)
    source = resolve_source(cfg.data.source)
    Storage.from_uri(cfg.storage)
    columns = check_columns(schema, read_header(source), key="data.source")
    retrain = check_retrain_source(cfg.monitoring.retrain_source, schema)
    table = Table(title=f"{config}: ok", show_header=False, box=None)
    table.add_row("name", cfg.name)
    table.add_row("task / metric", f"{cfg.training.task} / {cfg.training.metric}")
    table.add_row(
        "columns",
        f"{len(schema.names)} ({len(schema.feature_columns)} features, target {schema.target})",
    )
    files = f"{len(source.files)} {source.kind} file(s)" if source.files else "bundled dataset"
    table.add_row("data", f"{cfg.data.source} ({files})")
    if columns.undeclared:
        table.add_row("not used", f"{', '.join(columns.undeclared)} (data.extra: ignore)")
    table.add_row("retrain source", retrain)
    table.add_row("storage", redact_uri(cfg.storage))
    table.add_row("models", ", ".join(cfg.training.models or []))
    out.print(table)


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON schema of the project config."""
    from raymlops.config import ProjectConfig

    out.print_json(json.dumps(ProjectConfig.model_json_schema()))


# -- train ---------------------------------------------------------------------------------------


def _stage_printer():  # type: ignore[no-untyped-def]
    from raymlops.training.stages import StageLog

    def start(name: str) -> None:
        if _ray_log is None:
            err.print(f"[cyan]▶[/] {name} ...")
            return
        print(f"▶ {name} ...", file=sys.stderr, flush=True)  # landmarks in the log file
        if err.is_terminal:  # a spinner with the time so far; it leaves no line behind
            progress = _stage_progress(err)
            progress.add_task(f"{name} ...", total=None, count="")
            progress.start()
            _live.append(progress)

    def advance(name: str, done: int, total: int, text: str) -> None:
        """A bar for a stage that says how far it got (the search: trials ended of all)."""
        if _live:
            count = f"{done}/{total} trials" + (f", {text}" if text else "")
            _live[-1].update(_live[-1].task_ids[0], total=total, completed=done, count=count)

    def end(name: str, seconds: float, detail: str) -> None:
        _stop_live()
        err.print(f"[green]✓[/] {name} [dim]({seconds:.1f}s)[/] {detail}")
        if _ray_log is not None:
            print(f"✓ {name} ({seconds:.1f}s) {detail}", file=sys.stderr, flush=True)

    return StageLog(on_start=start, on_end=end, on_progress=advance)


def _stage_progress(console: Console) -> Any:
    """The line under the stage that runs: a spinner and the time so far, and a bar with its
    count once the stage reports how far it got. Transient: it leaves no line behind."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class Bar(BarColumn):  # none until the total is known (no bar pulsing for nothing)
        def render(self, task: Any) -> Any:
            return Text("") if task.total is None else super().render(task)

    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        Bar(bar_width=24),
        TextColumn("{task.fields[count]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        redirect_stdout=False,  # Ray's prints belong in the log, not above the bar
        redirect_stderr=False,
    )


def _params_text(params: dict[str, Any]) -> str:
    return " ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def _trials_table(result: Any, *, width: int | None = None) -> Table:
    """One line per trial. The params column is shown when every trial's params fit on its
    line at ``width`` (never wrapped inside a number); else the log file has the full table."""
    texts = [_params_text(trial.params) for trial in result.trials]
    fixed = 65  # #, model, score, steps, status and time with their padding
    with_params = width is None or fixed + max(map(len, texts), default=0) <= width
    title = f"Tune trials ({result.metric}; ★ best)"
    if not with_params:
        title += "; params in the log file"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("model", no_wrap=True)
    table.add_column(result.metric, justify="right", no_wrap=True)
    table.add_column("steps", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    if with_params:
        table.add_column("params", no_wrap=True)
    for trial, params in zip(result.trials, texts, strict=True):
        status = (
            trial.status
            if trial.status != "error"
            else f"[red]error[/] {escape(trial.error or '')}"
        )
        row = [
            f"{trial.index}{' ★' if trial.index == result.best_trial.index else ''}",
            trial.model,
            _fmt(trial.score),
            str(trial.steps),
            status,
            f"{trial.time_s:.1f}s",
        ]
        table.add_row(*row, *([escape(params)] if with_params else []))
    return table


def _print_ray_log() -> None:
    """Name the log file of Ray's output under a command's summary (none with --verbose): one
    line, never wrapped inside the path, so that it can be copied."""
    if _ray_log is not None:
        out.print(
            f"Ray's output: {escape(str(_ray_log.path))}  [dim](--verbose shows it here)[/]",
            soft_wrap=True,
        )


def _summary(result: Any, config: Path) -> Panel:
    metrics = Table(box=None, pad_edge=False)
    metrics.add_column("metric")
    metrics.add_column(f"{result.version} (new)", justify="right")
    champion = result.gate.champion
    if result.champion_version:
        metrics.add_column(f"{result.champion_version} (champion)", justify="right")
    for name, value in result.metrics.items():
        label = f"{name} ★" if name == result.metric else name
        row = [label, _fmt(value)]
        if result.champion_version:
            row.append(_fmt(champion.get(name)) if champion else "-")
        metrics.add_row(*row)
    verdict = "PASSED" if result.gate.passed else "FAILED"
    if result.promoted:
        headline = f"[green]{result.name} {result.version} registered and promoted to champion[/]"
    elif result.gate.passed:
        headline = f"[yellow]{result.name} {result.version} registered; passed the gate, not promoted (no --promote)[/]"
    else:
        headline = (
            f"[yellow]{result.name} {result.version} registered, not promoted: the gate failed[/]"
        )
    color = "green" if result.gate.passed else "red"
    reasons = result.gate.reasons
    if len(reasons) == 1:
        lines = [f"gate [{color}]{verdict}[/] ({result.metric}): {escape(reasons[0])}"]
    else:
        lines = [f"gate [{color}]{verdict}[/] ({result.metric}):"]
        lines += [f"  - {escape(reason)}" for reason in reasons]
    rows = result.rows
    lines.append(f"data     {rows['total']} rows: {rows['train']} train, {rows['holdout']} holdout")
    best = result.best_trial
    total = sum(result.stages.values())
    lines.append(
        f"best     {best.model} trial #{best.index}, search {result.search_wall_s:.1f}s, total {total:.1f}s"
    )
    width = max(40, out.width - 14)  # inside the panel, after the labels
    lines += [
        f"         {escape(part)}"
        for part in textwrap.wrap(_params_text(best.params), width, break_long_words=False)
    ]
    lines.append(f"files    {_here(f'{result.registry_location}/versions/{result.version}')}")
    lines.append("")
    lines.append(f"next     raymlops registry show --config {config} {result.version}")
    lines.append(_next_hint(result, config))
    body = Group(headline, metrics, "\n".join(lines))
    return Panel(body, title="raymlops train", expand=False)


def _here(location: str) -> str:
    """A local path relative to the current folder when it is inside it (shorter, so that it
    fits on the summary's line); anything else as it is."""
    if "://" in location:
        return location
    with contextlib.suppress(ValueError):
        return str(Path(location).resolve().relative_to(Path.cwd().resolve()))
    return location


def _next_hint(result: Any, config: Path) -> str:
    """The second "next" line: promote a version that is not champion (saying so when that
    overrides a failed gate), else verify the champion."""
    if result.promoted:
        return f"         raymlops registry verify --config {config} champion"
    promote = f"         raymlops registry promote --config {config} {result.version}"
    return promote if result.gate.passed else f"{promote}   # overrides the failed gate"


@app.command()
def train(
    config: ConfigOpt,
    promote: Annotated[
        bool, typer.Option("--promote", help="Promote to champion if the gate passes.")
    ] = False,
    address: AddressOpt = None,
    verbose: VerboseOpt = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", hidden=True, help="Kept for scripts: the default now.")
    ] = False,
) -> None:
    """Train, evaluate, gate and register a new version (and promote it with --promote)."""
    from raymlops.training.run import train as run_train

    cfg = _load(config)
    _check_data(cfg, cfg.data.source, "data.source")
    _quiet_ray("train", verbose)
    result = run_train(
        cfg, promote=promote, address=address, stages=_stage_printer(), verbose=0 if quiet else 1
    )
    if _ray_log is not None:  # the whole table, params and all, for the record
        print(_plain(_trials_table(result)), file=sys.stderr, flush=True)
    out.print(_trials_table(result, width=out.width))
    out.print(_summary(result, config))
    _print_ray_log()


def _plain(renderable: Any) -> str:
    """``renderable`` as plain text, as wide as it needs (for the log file)."""
    console = Console(width=250, no_color=True, highlight=False)
    with console.capture() as captured:
        console.print(renderable)
    return captured.get()


# -- registry ------------------------------------------------------------------------------------


@registry_app.command("list")
def registry_list(config: ConfigOpt) -> None:
    """Every version, its model, score, gate verdict and aliases."""
    registry = _registry(config)
    table = Table(title=f"{registry.name} at {registry.location}", title_justify="left")
    for column in ("version", "created", "model", "metric", "score", "gate", "aliases"):
        table.add_column(column)
    for info in registry.list():
        s = info.summary
        table.add_row(
            info.version,
            info.created_at[:19],
            str(s.get("model", "-")),
            str(s.get("metric", "-")),
            _fmt(s.get("score")),
            "passed" if s.get("gate_passed") else "failed",
            ", ".join(info.aliases),
        )
    out.print(table)
    if not registry.versions():
        out.print(f"no versions yet: raymlops train --config {config}")


@registry_app.command("show")
def registry_show(
    config: ConfigOpt,
    version: Annotated[str, typer.Argument(help="Version (v3) or alias.")] = "champion",
) -> None:
    """A version's metrics, gate decision, lineage and files."""
    registry = _registry(config)
    from raymlops.registry.bundle import BundleReader

    bundle = BundleReader(registry, version)
    manifest, name = bundle.manifest, bundle.version
    metrics, gate, lineage = bundle.metrics(), bundle.gate(), bundle.lineage()
    aliases = [a for a, v in registry.aliases().items() if v == name]
    table = Table(show_header=False, box=None)
    table.add_row(
        "version", f"{registry.name} {name}" + (f"  ({', '.join(aliases)})" if aliases else "")
    )
    table.add_row("created", manifest["created_at"])
    table.add_row(
        "model", f"{manifest['summary'].get('model')} ({manifest['summary'].get('model_file')})"
    )
    table.add_row("holdout", ", ".join(f"{k}={_fmt(v)}" for k, v in metrics["holdout"].items()))
    champ = metrics.get("champion") or {}
    if champ.get("version"):
        table.add_row(
            "champion then",
            f"{champ['version']}: "
            + ", ".join(f"{k}={_fmt(v)}" for k, v in (champ.get("holdout") or {}).items()),
        )
    table.add_row(
        "gate", ("passed" if gate["passed"] else "failed") + ": " + "; ".join(gate["reasons"])
    )
    data = lineage["data"]
    table.add_row(
        "data", f"{data['source']} (sha256 {data['digest'][:16]}…, {data['rows']['total']} rows)"
    )
    table.add_row("parent", str(lineage.get("parent")))
    trial = lineage["trial"]
    table.add_row("trial", f"#{trial['index']} {trial['model']} {json.dumps(trial['params'])}")
    table.add_row("config", f"sha256 {lineage['config_hash'][:16]}…")
    table.add_row("code", str(lineage["code"].get("git_commit") or "not a git checkout"))
    table.add_row("seeds", json.dumps(lineage["seeds"]))
    table.add_row("files", f"{registry.location}/versions/{name}: " + ", ".join(manifest["files"]))
    out.print(table)


@registry_app.command("verify")
def registry_verify(
    config: ConfigOpt,
    version: Annotated[
        str | None, typer.Argument(help="Version or alias (default: all versions).")
    ] = None,
    fix: Annotated[
        bool, typer.Option("--fix", help="Remove staging folders left by an interrupted register.")
    ] = False,
) -> None:
    """Check every file against its sha256 in MANIFEST.json, and the registry's own files:
    aliases.json, audit.jsonl, leftover staging folders (exit 4 on a problem)."""
    from raymlops.errors import IntegrityError

    registry = _registry(config)
    failed = []
    if version is None:
        files = registry.check_files(fix=fix)
        for entry in files.removed:
            out.print(f"[green]✓[/] removed the staging folder versions/{escape(entry)}")
        for note in files.notes:
            out.print(f"[yellow]![/] {escape(note)}")
        for problem in files.problems:
            out.print(f"[red]✗[/] {escape(problem)}")
        if files.ok:
            out.print(f"[green]✓[/] {registry.name}: aliases.json and audit.jsonl are sound")
        else:
            failed.append("the registry's own files")
    targets = [version] if version else registry.versions()
    for target in targets:
        report = registry.verify(target)
        if report.ok:
            out.print(
                f"[green]✓[/] {registry.name} {report.version}: {report.checked} files match the manifest"
            )
        else:
            failed.append(report.version)
            out.print(f"[red]✗[/] {registry.name} {report.version}:")
            for problem in report.problems:
                out.print(f"    {problem}")
    if not targets:
        out.print("no versions to verify")
    if failed:
        raise IntegrityError(f"{len(failed)} version(s) failed verification: {', '.join(failed)}")


@registry_app.command("card")
def registry_card(
    config: ConfigOpt,
    version: Annotated[str, typer.Argument(help="Version (v3) or alias.")] = "champion",
    serve: Annotated[
        bool, typer.Option("--serve", help="Serve the card and an index of all versions.")
    ] = False,
    port: Annotated[int, typer.Option("--port", help="Port for --serve (0: a free one).")] = 0,
) -> None:
    """A version's model card: print where it is, or serve it (127.0.0.1 only) with its
    promotions, rollbacks and drift history since training."""
    from raymlops.cards import card_page, serve_cards
    from raymlops.registry.card import CARD_HTML

    registry = _registry(config)
    manifest = registry.manifest(version)
    name = manifest["version"]
    card_page(registry, name)  # reads and verifies the stored card before anything is served
    if CARD_HTML in manifest["files"]:
        # a path is one token to copy: never wrapped at the terminal's width
        out.print(escape(f"{registry.location}/versions/{name}/{CARD_HTML}"), soft_wrap=True)
    else:
        out.print(f"{registry.name} {name} was registered without a card; --serve renders one")
    if serve:
        def ready(url: str) -> None:
            out.print(f"serving cards at {url}{name}  (index: {url}; Ctrl-C stops)", soft_wrap=True)

        try:
            serve_cards(registry, port=port, ready=ready)
        except KeyboardInterrupt:
            out.print("stopped")


@registry_app.command("promote")
def registry_promote(
    config: ConfigOpt,
    version: Annotated[
        str | None, typer.Argument(help="Version to promote (v3), or an alias.")
    ] = None,
    canary: Annotated[
        bool, typer.Option("--canary", help="Promote serving.canary.version.")
    ] = False,
    alias: Annotated[str, typer.Option(help="Alias to move.")] = "champion",
    reason: Annotated[str, typer.Option(help="Why (goes to the audit log).")] = "manual promotion",
    address: AddressOpt = None,
    allow_schema_change: AllowSchemaChangeOpt = False,
) -> None:
    """Point an alias (champion by default) at a version that verifies; serving follows.

    With --address (or RAY_ADDRESS) the replicas serving the model on that cluster are told
    at once; otherwise they see the move at their next poll (serving.reload_poll_s).
    """
    cfg = _load(config)
    if canary:
        version = cfg.serving.canary.version
        if version is None:
            raise RaymlopsError("--canary: serving.canary.version is not set in the config")
        reason = reason if reason != "manual promotion" else "canary promoted"
    if version is None:
        raise typer.BadParameter("give a VERSION, or --canary", param_hint="VERSION")
    from raymlops.pipeline import open_registry

    registry = open_registry(cfg)
    event = registry.promote(
        version, alias=alias, reason=reason, allow_schema_change=allow_schema_change
    )
    out.print(
        f"[green]✓[/] {registry.name} {alias}: {event.previous or '(none)'} → {event.version}  "
        f"[dim]({event.actor}; {_push_to_serving(registry.name, address)})[/]"
    )


@registry_app.command("rollback")
def registry_rollback(
    config: ConfigOpt,
    alias: Annotated[str, typer.Option(help="Alias to move back.")] = "champion",
    reason: Annotated[str, typer.Option(help="Why (goes to the audit log).")] = "manual rollback",
    address: AddressOpt = None,
    allow_schema_change: AllowSchemaChangeOpt = False,
) -> None:
    """Point an alias back at the version it had before; serving follows, as after promote."""
    registry = _registry(config)
    event = registry.rollback(
        alias=alias, reason=reason, allow_schema_change=allow_schema_change
    )
    out.print(
        f"[green]✓[/] {registry.name} {alias}: {event.previous} → {event.version} (rolled back)  "
        f"[dim]({_push_to_serving(registry.name, address)})[/]"
    )


def _push_to_serving(model: str, address: str | None) -> str:
    """Tell the replicas on the cluster at ``address`` that the alias moved; say what happened."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        return "Serve replicas follow within serving.reload_poll_s"
    try:
        from raymlops.runtime import ensure_ray
        from raymlops.serving.push import push_alias_moved

        _quiet_ray("registry", False)
        ensure_ray(address)
        pushed = push_alias_moved(model)
    except Exception as exc:  # the move is done and durable; only the shortcut failed
        return f"push to {address} failed ({exc}); replicas follow within serving.reload_poll_s"
    if pushed:
        return f"pushed to the replicas serving {model} at {address}"
    return f"no replica serves {model} at {address}"


# -- serve ---------------------------------------------------------------------------------------


@app.command("serve")
def serve_command(
    config: ConfigOpt,
    address: AddressOpt = None,
    alias: Annotated[str, typer.Option(help="Registry alias or version to serve.")] = "champion",
    detach: Annotated[
        bool, typer.Option("--detach", help="Return after deploying (needs --address).")
    ] = False,
    monitor: Annotated[
        bool,
        typer.Option(
            "--monitor/--no-monitor", help="Run the DriftMonitor on the served traffic too."
        ),
    ] = True,
    verbose: VerboseOpt = False,
) -> None:
    """Serve the champion over HTTP with Ray Serve (Ctrl-C stops it), watched for drift."""
    cfg = _load(config)
    _check_model(cfg, alias, config)
    from raymlops.runtime import ensure_ray, metrics_urls
    from raymlops.serving.app import build_application, resolve_api_key

    # this command starts Serve on serving.host; build_application checks the Serve that runs
    api_key = resolve_api_key(cfg, running_host=cfg.serving.host)
    if detach and not (address or os.environ.get("RAY_ADDRESS")):
        raise UsageError(
            "--detach needs a running cluster (--address or RAY_ADDRESS): a local Ray ends with this process"
        )
    _quiet_ray("serve", verbose)
    ensure_ray(address, jobs=monitor)  # the monitor submits retrains through the Jobs API
    from ray import serve

    # Serve first: the key check of build_application reads the host Serve really binds
    serve.start(http_options={"host": cfg.serving.host, "port": cfg.serving.port})
    application = build_application(cfg, alias=alias)
    try:
        serve.run(application, name=cfg.name, route_prefix="/")
        if monitor:
            from raymlops.monitoring.monitor import start_monitor

            start_monitor(config)
        # Ray may leave its own SIGINT handler in place; a SIGINT once absorbed by it left this
        # loop running for over an hour. Ctrl-C and SIGTERM must end the loop below.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        url = f"http://{cfg.serving.host}:{cfg.serving.port}"
        key = (
            f"required: Authorization: Bearer ${cfg.serving.api_key_env}"
            if api_key
            else "none (loopback only)"
        )
        lines = [
            f"[green]✓[/] serving {cfg.name} ({alias}) at [bold]{url}[/]",
            f"  docs      {url}/docs" + ("  (with the key)" if api_key else ""),
            f'  predict   POST {url}/v1/models/{cfg.name}:predict  {{"instances": [...]}}',
            f"  key       {key}",
            *(f"  metrics   {m}  (Prometheus: ray_raymlops_*, ray_serve_*)" for m in metrics_urls()),
        ]
        if monitor:
            lines.append(
                f"  monitor   monitor:{cfg.name}, windows of {cfg.monitoring.window_rows} rows "
                f"(raymlops monitor status --config {config})"
            )
        out.print(Panel("\n".join(lines), title="raymlops serve", expand=False))
        _print_ray_log()
        if detach:
            return
        out.print("[dim]Ctrl-C to stop[/]")
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        out.print("stopping ...")
    finally:
        if not detach:
            if monitor:
                from raymlops.monitoring.monitor import stop_monitor

                with contextlib.suppress(Exception):  # saved state matters; a dead actor does not
                    stop_monitor(cfg.name)
            serve.shutdown()


@app.command("predict")
def predict_command(
    config: ConfigOpt,
    input_path: Annotated[
        str, typer.Option("--input", help="CSV or Parquet rows: path, glob or URI.")
    ],
    output: Annotated[
        str, typer.Option("--output", help="Folder (or URI) for the Parquet output.")
    ],
    alias: Annotated[str, typer.Option(help="Registry alias or version.")] = "champion",
    address: AddressOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Batch inference in Ray tasks (read, validate, predict each piece); Parquet out."""
    from raymlops.runtime import ensure_ray
    from raymlops.serving.batch import batch_predict

    cfg = _load(config)
    _check_input(input_path)
    _check_model(cfg, alias, config)
    _quiet_ray("predict", verbose)
    ensure_ray(address)
    result = batch_predict(cfg, input_path, output, alias=alias)
    out.print(
        Panel(
            f"[green]✓[/] {result.rows} rows predicted by {cfg.name} {result.version} "
            f"in {result.seconds:.1f}s\n  output  {result.output} (Parquet: input columns, "
            "prediction, probability_<class>, model_version, row)",
            title="raymlops predict",
            expand=False,
        )
    )
    _print_ray_log()


def _check_input(input_path: str) -> None:
    """``--input`` matches CSV or Parquet files; it is read from the current folder."""
    from raymlops.data.sources import resolve_source
    from raymlops.errors import ConfigError

    try:
        resolve_source(input_path)
    except ConfigError:
        raise UsageError(
            f"--input: no CSV or Parquet file matches {input_path!r} (a relative path is read "
            f"from the current folder, {Path.cwd()}); check the path or the glob"
        ) from None


# -- monitor and retrain ---------------------------------------------------------------------------


def _cluster_address(address: str | None, what: str) -> str:
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        raise UsageError(
            f"{what} needs a running Ray cluster: pass --address (or set RAY_ADDRESS); "
            "on a laptop, `raymlops serve --config C` runs the monitor beside the model"
        )
    return address


@monitor_app.command("start")
def monitor_start(config: ConfigOpt, address: AddressOpt = None) -> None:
    """Start the detached DriftMonitor of this model on a running cluster."""
    cfg = _load(config)
    from raymlops.monitoring.monitor import get_monitor, start_monitor
    from raymlops.runtime import ensure_ray

    target = _cluster_address(address, "monitor start")
    _quiet_ray("monitor", False)
    ensure_ray(target)
    existed = get_monitor(cfg.name) is not None
    start_monitor(config)
    rule = cfg.monitoring
    out.print(
        f"[green]✓[/] monitor:{cfg.name} {'already runs' if existed else 'started'}  "
        f"[dim](windows of {rule.window_rows} rows, drift share ≥ {rule.drift_share}, "
        f"{rule.consecutive_windows} windows in a row, cooldown {rule.cooldown_s:.0f}s)[/]\n"
        f"  next: raymlops monitor status --config {config}"
    )


@monitor_app.command("status")
def monitor_status(config: ConfigOpt, address: AddressOpt = None) -> None:
    """Windows seen, drift, decisions, retrain jobs and reports (live, or as last saved)."""
    cfg = _load(config)
    status = None
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is not None:
        import ray

        from raymlops.monitoring.monitor import get_monitor
        from raymlops.runtime import ensure_ray

        _quiet_ray("monitor", False)
        ensure_ray(address)
        monitor = get_monitor(cfg.name)
        if monitor is not None:
            status = {**ray.get(monitor.status.remote(), timeout=30), "source": "live"}
    if status is None:
        registry = _registry(config)
        from raymlops.monitoring.policy import state_path

        path = state_path(cfg.name)
        if not registry.storage.exists(path):
            raise UsageError(
                f"no monitor state for {cfg.name} in {redact_uri(cfg.storage)}: start one with "
                f"`raymlops monitor start --config {config} --address ...` or `raymlops serve`"
            )
        status = {**registry.storage.read_json(path), "source": "saved"}  # type: ignore[dict-item]
        status["liveness"] = _saved_monitor_liveness(status)
    out.print(_monitor_panel(cfg.name, status))


def _saved_monitor_liveness(status: dict[str, Any]) -> str:
    """Whether the monitor that saved this state still runs, in words (no Ray needed): its
    process is checked when it ran on this machine."""
    import socket

    saved = f"state saved {status.get('saved_at', '?')}"
    if not status.get("running"):
        return f"not running; {saved}"
    pid, host = status.get("pid"), status.get("host")
    if host == socket.gethostname() and isinstance(pid, int):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return f"not running (its process {pid} is gone); {saved}"
        except PermissionError:
            pass
        return f"running, pid {pid}; {saved}"
    return f"running on {host} (pid {pid}) as last saved; {saved}"


def _monitor_panel(model: str, status: dict[str, Any]) -> Group:
    share = status.get("last_share")
    facts = Table.grid(padding=(0, 2))
    if status.get("liveness"):
        facts.add_row("monitor", escape(status["liveness"]))
    if status["windows_seen"] == 0:
        size = status.get("window_rows")
        facts.add_row(
            "windows seen",
            "0: no window checked yet" + (f" (one every {size} served rows)" if size else ""),
        )
    else:
        facts.add_row("windows seen", str(status["windows_seen"]))
    facts.add_row("last drift share", "-" if share is None else f"{share:.2f}")
    facts.add_row("drifted columns", ", ".join(status.get("last_drifted_columns", [])) or "-")
    facts.add_row("drifted in a row", str(status["consecutive_drift"]))
    facts.add_row("job in flight", status.get("job_in_flight") or "-")
    if "received_rows" in status:
        facts.add_row(
            "rows",
            f"{status['received_rows']} received, {status['buffered_rows']} in the open window, "
            f"{status['dropped_rows']} dropped",
        )
    parts: list[Any] = [facts]
    decisions = status.get("recent_decisions") or []
    if decisions:
        table = Table("window", "version", "share", "decision", "why", box=box.SIMPLE_HEAD)
        for d in decisions:
            verdict = "[bold]retrain[/]" if d["retrain"] else ("drift" if d["drifted"] else "ok")
            table.add_row(str(d["window"]), d["version"], f"{d['share']:.2f}", verdict, d["reasons"][-1])
        parts.append(table)
    jobs = status.get("jobs") or []
    if jobs:
        table = Table("retrain job", "window", "status", "message", box=box.SIMPLE_HEAD)
        for job in jobs:
            table.add_row(job["submission_id"], str(job["window"]), job["status"], job.get("message", "")[:80])
        parts.append(table)
    for alert in status.get("alerts", []):
        parts.append(f"[red]alert:[/] {escape(alert)}")
    for report in status.get("reports", [])[-3:]:
        parts.append(f"report  {report}")
    return Group(
        Panel(Group(*parts), title=f"monitor:{model} ({status.get('source', 'live')})", expand=False)
    )


@monitor_app.command("stop")
def monitor_stop(config: ConfigOpt, address: AddressOpt = None) -> None:
    """Save the monitor's state and stop it."""
    cfg = _load(config)
    from raymlops.monitoring.monitor import stop_monitor
    from raymlops.runtime import ensure_ray

    target = _cluster_address(address, "monitor stop")
    _quiet_ray("monitor", False)
    ensure_ray(target)
    status = stop_monitor(cfg.name)
    if status is None:
        raise UsageError(f"no monitor runs for {cfg.name} on this cluster")
    out.print(f"[green]✓[/] monitor:{cfg.name} stopped after {status['windows_seen']} windows")


@app.command("retrain")
def retrain_command(
    config: ConfigOpt,
    trigger_window: Annotated[
        int | None, typer.Option(help="The monitor window that triggered it (lineage).")
    ] = None,
    parent: Annotated[str | None, typer.Option(help="The version being replaced.")] = None,
    report: Annotated[str | None, typer.Option(help="The drift report behind it.")] = None,
    address: AddressOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Retrain on monitoring.retrain_source, gate against the champion, promote if it passes.

    This is what the monitor's retrain job runs (jobs/retrain.py).
    """
    from raymlops.monitoring.retrain import run_retrain

    cfg = _load(config)
    if cfg.monitoring.retrain_source:
        _check_data(cfg, cfg.monitoring.retrain_source, "monitoring.retrain_source")
    _quiet_ray("retrain", verbose)
    result = run_retrain(
        cfg,
        trigger_window=trigger_window,
        parent=parent,
        report=report,
        address=address,
        stages=_stage_printer(),
    )
    out.print(_summary(result, config))


# -- demo ----------------------------------------------------------------------------------------


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="Folder for the demo project.")] = Path("./demo"),
    address: AddressOpt = None,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the stage times and outcome here (the loop benchmark)."),
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """The whole loop on generated churn data: train -> serve -> drift -> retrain job -> swap."""
    from raymlops.demo import run_demo

    started = time.perf_counter()

    def show(kind: str, text: str) -> None:
        if kind == "start":
            err.print(f"\n[bold cyan]▶ {text}[/]")
        elif kind == "end":
            stage, seconds, detail = text.split("\t", 2)
            err.print(f"[bold green]✓ {stage}[/] [dim]({seconds}s)[/] {escape(detail)}")
        elif kind == "decision":
            d = json.loads(text)
            mark = "[bold red]retrain[/]" if d["retrain"] else ("[yellow]drift[/]" if d["drifted"] else "[green]ok[/]")
            err.print(
                f"  window {d['window']:>3} ({d['version']}): drift share {d['share']:.2f} {mark}  "
                f"[dim]{escape(d['reasons'][-1])}[/]"
            )
        else:
            err.print(f"[dim]{escape(text)}[/]")

    _quiet_ray("demo", verbose)
    result = run_demo(workdir, address=address, events=show, stage_log=_stage_printer())
    seconds = time.perf_counter() - started
    if json_out is not None:
        outcome = {
            "seconds": seconds,
            "stages": result.stages,
            "champion_before": result.champion_before,
            "served_version": result.served_version,
            "windows": len(result.decisions),
            "retrain_jobs": len(result.jobs),
        }
        json_out.write_text(json.dumps(outcome, indent=2), encoding="utf-8")
    out.print(_demo_summary(result, seconds))
    _print_ray_log()


def _demo_summary(result: Any, seconds: float) -> Panel:
    stages = Table("stage", "seconds", box=box.SIMPLE_HEAD)
    for stage, took in result.stages.items():
        stages.add_row(stage, f"{took:.1f}")
    retrain = result.retrain or {}
    gate = retrain.get("gate", {})
    new, old = retrain.get("version", "-"), gate.get("champion_version") or result.champion_before
    metrics = Table("metric (drifted holdout)", f"{old} (before)", f"{new} (retrained)", box=box.SIMPLE_HEAD)
    for metric, value in (gate.get("challenger") or {}).items():
        metrics.add_row(metric, _fmt((gate.get("champion") or {}).get(metric)), _fmt(value))
    config = result.config_path
    lines = [
        f"versions  {old} → {new}; Serve answers with {result.served_version} at {result.url} (stopped)",
        f"windows   {len(result.decisions)} checked, "
        f"{sum(d['drifted'] for d in result.decisions)} drifted, {len(result.jobs)} retrain job(s)",
    ]
    lines += [f"report    {path}" for path in result.reports[-2:]]
    lines += [
        "",
        f"open the reports   evidently ui --workspace {result.workspace}",
        f"monitor state      raymlops monitor status --config {config}",
        f"lineage of {new}     raymlops registry show --config {config} {new}",
        f"serve it yourself  raymlops serve --config {config}",
    ]
    body = Group(
        f"[green]the loop closed in {seconds:.0f}s[/]", stages, metrics, "\n".join(escape(x) for x in lines)
    )
    return Panel(body, title="raymlops demo", expand=False)


# -- entry point ---------------------------------------------------------------------------------


def _render_data_error(error: DataValidationError) -> None:
    report = error.report
    if (
        report is None
        or not getattr(report, "issues", None)
        and not getattr(report, "problems", None)
    ):
        err.print(f"[red]error:[/] {escape(str(error))}")
        return
    table = Table(
        title=f"data validation failed ({report.rows} rows read); nothing was trained or registered",
        title_justify="left",
    )
    for column in ("column", "problem", "bad rows", "expected", "first rows (row: value)"):
        table.add_column(column)
    for issue in report.issues:
        shown = ", ".join(f"{r}: {v}" for r, v in issue.examples)
        table.add_row(issue.column, issue.problem, str(issue.count), issue.expected, shown)
    for problem in report.problems:
        table.add_row("-", problem, "-", "-", "-")
    err.print(table)
    # the plain text too, so logs and scripts that do not keep rich tables see every finding
    err.print(str(error), markup=False)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (used by the console script and ``jobs/*.py``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        try:
            app(args=args, prog_name="raymlops", standalone_mode=False)
        finally:
            # called as a program (argv None): keep Ray's exit lines in the log as well
            log = _end_quiet_ray(restore=argv is not None)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        err.print("aborted")
        return 130
    except ClickException as exc:
        exc.show(file=sys.stderr)
        return exc.exit_code or 2
    except DataValidationError as exc:
        _render_data_error(exc)
        _print_log_path(log)
        return exc.exit_code
    except RaymlopsError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        _print_log_path(log)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("interrupted")
        _print_log_path(log)
        return 130
    except Exception:
        if log is None or argv is not None:
            raise
        import traceback

        trace = traceback.format_exc()
        print(trace, file=sys.stderr, flush=True)  # the log file
        err.print(trace, markup=False, highlight=False)
        _print_log_path(log)
        return 1
    return 0


def _print_log_path(log: Path | None) -> None:
    if log is not None:
        err.print(f"[dim]Ray's output: {escape(str(log))}[/]", soft_wrap=True)


if __name__ == "__main__":
    raise SystemExit(main())
