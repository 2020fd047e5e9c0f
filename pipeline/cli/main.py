"""The `tracemill` command line. Heavy imports (torch, deeplake, mlflow) happen inside commands so
that `tracemill --help` and `tracemill workspace list` answer instantly."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.table import Table
from rich.text import Text

from pipeline.capture.workspace import Workspace, WorkspaceNotFound
from pipeline.cli.common import HomeOpt, JsonOpt, WorkspaceArg, console, err, fail, flat
from pipeline.cli.errors import OneLineErrors, apply_hub_environment

app = typer.Typer(help="tracemill: agent trajectories → curated, versioned corpora → trained models.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False, cls=OneLineErrors)
workspace_app = typer.Typer(help="Create, list, inspect and delete workspaces.", no_args_is_help=True)
app.add_typer(workspace_app, name="workspace")
_STACK = ("torch", "transformers", "trl", "datasets", "deeplake", "dagster", "mlflow", "polars")


def versions() -> list[tuple[str, str]]:
    """tracemill's version, then the stack's, read from package metadata (nothing is imported: instant)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in ("tracemill", *_STACK):
        try:
            out.append((name, version(name)))
        except PackageNotFoundError:
            out.append((name, "not installed"))
    return out


def _print_version(value: bool) -> None:
    if value:
        (name, own), *stack = versions()
        sys.stdout.write(f"{name} {own}\n" + "".join(f"  {n} {v}\n" for n, v in stack))
        raise typer.Exit()


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", envvar="TRACEMILL_DEBUG",
                                        help="Show the full traceback of an error instead of one line.")] = False,
    online: Annotated[bool, typer.Option("--online", help="Let Hugging Face libraries reach the hub (default: "
                                         "offline unless HF_HUB_OFFLINE is set), e.g. to download a base model.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the versions of tracemill and of its stack, then exit.")] = False,
) -> None:
    """tracemill: agent trajectories → curated, versioned corpora → trained models."""
    apply_hub_environment(online)  # `debug` is read by OneLineErrors from this context


def open_ws(name: str, home: str | None) -> Workspace:
    try:
        return Workspace.open(name, home=home, create=False)
    except (WorkspaceNotFound, ValueError) as exc:
        fail(str(exc))


@app.command()
def schema(out: Annotated[Path | None, typer.Option(help="Write one <record>.schema.json per type here.")] = None):
    """Print (or write) the JSON Schema of Trajectory, Outcome and Preference."""
    from pipeline.schema import json_schemas

    schemas = json_schemas()
    if out is None:
        sys.stdout.write(orjson.dumps(schemas, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    out.mkdir(parents=True, exist_ok=True)
    for name, body in schemas.items():
        (out / f"{name}.schema.json").write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2))
    console.print(f"wrote {len(schemas)} schemas to {out}")


@workspace_app.command("create")
def workspace_create(name: WorkspaceArg, description: Annotated[str, typer.Option(
        help="A free-text note kept with the workspace.")] = "", home: HomeOpt = None):
    """Create a workspace (a folder under the tracemill home)."""
    try:
        ws = Workspace.create(name, home=home, description=description)
    except (FileExistsError, ValueError) as exc:
        fail(str(exc))
    except OSError as exc:  # an unwritable or full home: say where, not a traceback
        fail(f"cannot create workspace {name!r}: {exc.strerror or exc} ({exc.filename or home})")
    console.print(f"created workspace [bold]{name}[/] at {ws.root}")


@workspace_app.command("list")
def workspace_list(home: HomeOpt = None, json: JsonOpt = False):
    """List workspaces."""
    names = Workspace.list(home)
    if json:
        sys.stdout.write(orjson.dumps(names).decode() + "\n")
        return
    if not names:
        console.print("no workspaces yet: `tracemill workspace create NAME`")
    for n in names:
        console.print(n)


@workspace_app.command("show")
def workspace_show(name: WorkspaceArg, home: HomeOpt = None, json: JsonOpt = False):
    """Counts of trajectories, messages, tool calls, outcomes and quarantined records."""
    from pipeline.lake.ingest import workspace_counts

    ws = open_ws(name, home)
    counts = {"workspace": name, "path": str(ws.root), **workspace_counts(ws)}
    if json:
        sys.stdout.write(orjson.dumps(counts).decode() + "\n")
        return
    table = Table(title=f"workspace {name}", show_header=False)
    for k, v in counts.items():
        table.add_row(k, str(v))
    console.print(table)


@workspace_app.command("delete")
def workspace_delete(name: WorkspaceArg, yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
                     home: HomeOpt = None):
    """Delete a workspace and everything captured in it."""
    ws = open_ws(name, home)
    if not yes and not typer.confirm(f"delete workspace {name!r} and all its data?"):
        raise typer.Exit(1)
    ws.delete()
    console.print(f"deleted workspace {name}")


@app.command("import")
def import_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to import.")],
    workspace: Annotated[str, typer.Option("--workspace", "-w", help="Target workspace.")],
    format: Annotated[str | None, typer.Option("--format", "-f", help="Skip detection: one of `tracemill formats`.")] = None,
    agent: Annotated[str | None, typer.Option(help="Agent name when the source has none.")] = None,
    default_time: Annotated[str | None, typer.Option(
        help="Start time (ISO) for records without timestamps; default: the day they are first imported.")] = None,
    create: Annotated[bool, typer.Option(help="Create the workspace if missing.")] = False,
    home: HomeOpt = None, json: JsonOpt = False,
):
    """Import third-party trajectory files (format detected from the content)."""
    from datetime import UTC, datetime

    from pipeline.capture.importers import FORMATS, import_paths

    if format and format not in FORMATS:
        fail(f"unknown format {format!r}; choose one of: {', '.join(FORMATS)}")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        fail(f"no such file or folder: {', '.join(missing)}")
    try:
        ws = Workspace.open(workspace, home=home) if create else open_ws(workspace, home)
    except (ValueError, OSError) as exc:  # a bad name (`../x`) or an unwritable home: one line
        fail(str(exc))
    when = None
    if default_time:
        try:
            when = datetime.fromisoformat(default_time)
        except ValueError:
            fail(f"--default-time {default_time!r} is not an ISO date/time (e.g. 2026-11-20)")
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
    summary = import_paths(paths, ws, format=format, progress=not json, agent=agent, default_time=when,
                           console=err)
    report = {"trajectories": summary.trajectories, "outcomes": summary.outcomes,
              "preferences": summary.preferences, "timeless_days": summary.timeless,
              "errors": [{"path": p, **e.__dict__} for p, e in summary.errors],
              "skipped": [{"path": p, "reason": r} for p, r in summary.skipped],
              "files": [{"path": f.path, "format": f.format, "trajectories": f.trajectories} for f in summary.files]}
    if json:
        sys.stdout.write(orjson.dumps(report, default=str).decode() + "\n")
    else:
        table = Table("file", "format", "trajectories", "outcomes", "errors")
        for f in summary.files:
            if not f.skipped:
                table.add_row(f.path, f.format or "", str(f.trajectories), str(f.outcomes), str(len(f.errors)))
        console.print(table)
        for p, reason in summary.skipped:
            err.print(f"skipped {p}: {reason[:300]}", style="dim", markup=False, highlight=False)
        console.print(f"imported {summary.trajectories} trajectories, {summary.outcomes} outcomes "
                      f"into [bold]{ws.name}[/]")
        for p, e in summary.errors[:20]:
            # str(e): "line 4: messages.0.role: …", or "line 4: invalid JSON …" when no field is at fault
            err.print(Text.assemble((p, "yellow"), f" {flat(str(e))}"), soft_wrap=True)
        if not default_time and summary.timeless:
            err.print(f"[yellow]note:[/] {sum(summary.timeless.values())} trajectories without timestamps landed on "
                      f"{', '.join(summary.timeless)}: the day they were first imported here (a re-import keeps "
                      "it); --default-time YYYY-MM-DD places them on another day")
    if summary.trajectories == 0 and (summary.errors or summary.skipped):
        raise typer.Exit(1)


@app.command()
def formats():
    """List the import formats."""
    from pipeline.capture.importers import FORMATS

    for name, f in FORMATS.items():
        console.print(f"[bold]{name}[/]  {f.description}")


def _register_capture() -> None:
    from pipeline.cli.capture import serve as capture_serve
    from pipeline.cli.capture import token_app
    from pipeline.cli.corpus import corpus_app, snapshot

    app.command("serve")(capture_serve)
    app.add_typer(token_app, name="token")
    app.command("snapshot")(snapshot)
    app.add_typer(corpus_app, name="corpus")
    from pipeline.cli.train import eval_app, train_app

    app.add_typer(train_app, name="train")
    app.add_typer(eval_app, name="eval")
    from pipeline.cli.ops import backfill

    app.command("backfill")(backfill)
    from pipeline.cli.grade import grade

    app.command("grade")(grade)
    from pipeline.cli.watch import watch

    app.command("watch")(watch)
    from pipeline.cli.trajectories import outcome_app, trajectories_app

    app.add_typer(trajectories_app, name="trajectories")
    app.add_typer(outcome_app, name="outcome")


_register_capture()


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
