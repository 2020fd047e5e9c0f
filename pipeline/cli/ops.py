"""`tracemill backfill`: operations commands that drive Dagster from the outside.

Mounted on the main app with `app.command("backfill")(backfill)`. Nothing here imports Dagster: the
work is done by `python -m assets.backfill` in a subprocess through Dagster's Python API (see
pipeline/lake/backfill.py for why), and this module only turns its typed event stream into progress
lines and a summary.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Annotated

import orjson
import typer
from rich.table import Table

from pipeline.capture.workspace import Workspace, WorkspaceNotFound
from pipeline.cli.common import HomeOpt, JsonOpt, console, err, fail
from pipeline.lake.backfill import BackfillEvent, BackfillResult, plan_backfill, run_backfill


def _progress(ev: BackfillEvent) -> None:
    """One line per step boundary, user log line and check: enough to follow a long backfill."""
    if ev.event == "RUN_START":
        console.print(f"[dim]run {ev.run_id[:8]} started[/]")
    elif ev.event == "STEP_START":
        console.print(f"  ▶ {ev.step}")
    elif ev.event == "LOG" and ev.step:
        console.print(f"    {ev.message}")
    elif ev.event == "STEP_SUCCESS":
        console.print(f"  [green]✓[/] {ev.step} {ev.message.rsplit(' in ', 1)[-1].rstrip('.')}")
    elif ev.event == "ASSET_CHECK_EVALUATION":
        console.print(f"    check: {ev.message}")
    elif ev.event in {"STEP_FAILURE", "RUN_FAILURE"}:
        console.print(f"  [bold red]✗ {ev.step or 'run'}[/]: {ev.message}")


def _summary(result: BackfillResult) -> None:
    table = Table("day", "landed", "joined rows", title="backfill", title_style="bold")
    for day in result.days:
        table.add_row(day, "yes" if day in result.landed_days else "[yellow]no data[/]",
                      str(result.rows.get(day, "-")))
    console.print(table)
    mats = ", ".join(f"{k} ×{v}" for k, v in sorted(result.materializations.items()))
    console.print(f"{len(result.run_ids)} Dagster runs ({', '.join(r[:8] for r in result.run_ids)}); "
                  f"materialized {mats or 'nothing'}; {result.seconds} s")


def backfill(
    start: Annotated[str, typer.Option("--from", help="First day, YYYY-MM-DD.")],
    end: Annotated[str, typer.Option("--to", help="Last day (inclusive), YYYY-MM-DD.")],
    workspace: Annotated[str | None, typer.Option(help="Workspace (default: tracemill.yaml's).")] = None,
    home: HomeOpt = None,
    dagster_home: Annotated[str | None, typer.Option(envvar="DAGSTER_HOME",
                                                     help="Dagster instance (default: <home>/dagster).")] = None,
    multiprocess: Annotated[bool, typer.Option("--multiprocess",
                                               help="One process per step instead of in-process.")] = False,
    daemon: Annotated[bool, typer.Option("--daemon", help="Queue one run per day for the running daemon "
                                                          "(`make ui`) and return, instead of running here.")] = False,
    json: JsonOpt = False,
) -> None:
    """Re-ingest and re-join a range of days (raw_trajectories, outcomes, joined_trajectories),
    recorded in the Dagster instance so the UI and the sensors see it."""
    try:
        plan = plan_backfill(start, end, workspace=workspace, home=home, dagster_home=dagster_home,
                             in_process=not multiprocess, daemon=daemon)
        Workspace.open(plan.workspace, home=plan.home, create=False)
    except (ValueError, WorkspaceNotFound) as exc:
        fail(str(exc))
    if daemon:
        if plan.overrides_workspace:
            fail(f"the daemon runs the workspace its code location was started with; "
                 f"start `make ui` with a config for {plan.workspace!r}, or drop --daemon")
        raise typer.Exit(subprocess.call(plan.command, env=plan.env))
    if not json:
        console.print(f"backfilling [bold]{plan.workspace}[/] {plan.days[0]} … {plan.days[-1]} "
                      f"({len(plan.days)} days) into the Dagster instance at {plan.dagster_home}")
    result = run_backfill(plan, on_event=None if json else _progress)
    if json:
        sys.stdout.write(orjson.dumps({
            "ok": result.ok, "workspace": plan.workspace, "days": result.days, "run_ids": result.run_ids,
            "materializations": dict(result.materializations), "rows": result.rows,
            "landed_days": result.landed_days, "failures": result.failures, "seconds": result.seconds,
        }).decode() + "\n")
    else:
        _summary(result)
    if not result.ok:
        if not json:
            err.print("[bold red]backfill failed[/]; last output:\n" + "\n".join(result.output_tail[-15:]))
        raise typer.Exit(1)
