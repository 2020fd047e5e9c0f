"""`tracemill grade`: run a grading hook (a user function or an LLM-judge wrapper) over a workspace.

Mounted on the main app with `app.command("grade")(grade)`. The grader is named `module:function` so
any importable code can judge, and the current folder is importable, as it is for `python -m`. Its
outcomes land in the workspace like any other outcome (source `judge` by default), so the late-outcome
sensor joins them into already-materialized days. A grader that raises on some trajectories is a
normal event for an LLM judge (timeouts, refusals): those are counted per reason and the rest land.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from pipeline.capture.workspace import Workspace, WorkspaceNotFound
from pipeline.cli.common import HomeOpt, JsonOpt, console, err, fail
from pipeline.lake.grading import GradingReport, grade_workspace, materialized_days


def load_grader(spec: str) -> Callable[[dict[str, Any]], Any]:
    """Resolve `package.module:function` (dotted attributes allowed after the colon) to a callable."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"--fn wants module:function (e.g. graders:exact_answer), got {spec!r}")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # a console script does not see the current folder otherwise
    try:
        obj: Any = importlib.import_module(module)
    except Exception as exc:  # a syntax error in the user's module is as likely as a typo
        raise ValueError(f"cannot import {module!r}: {type(exc).__name__}: {exc}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{module!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{spec} is a {type(obj).__name__}, not a function")
    return obj


def select_days(ws: Workspace, day: str | None, start: str | None, end: str | None) -> tuple[list[str], list[str]]:
    """(materialized days to grade, landed days in the window that are not in the lake yet)."""
    if day and (start or end):
        raise ValueError("use either --day or --from/--to")
    if day:
        start = end = day
    for flag, value in (("--day" if day else "--from", start), ("--to", end)):
        if value is not None:
            try:
                date.fromisoformat(value)
            except ValueError:
                raise ValueError(f"{flag} {value!r} is not a day (YYYY-MM-DD)") from None
    if start and end and end < start:
        raise ValueError(f"--to {end} is before --from {start}")

    def inside(d: str) -> bool:
        return (start is None or d >= start) and (end is None or d <= end)

    have = materialized_days(ws)
    return [d for d in have if inside(d)], [d for d in ws.days("trajectory") if inside(d) and d not in have]


def _by_reason(report: GradingReport) -> dict[str, list[str]]:
    """Failures grouped by their message, so one judge outage reads as one line, not a thousand."""
    groups: dict[str, list[str]] = {}
    for tid, reason in report.failed.items():
        groups.setdefault(reason, []).append(tid)
    return dict(sorted(groups.items(), key=lambda kv: -len(kv[1])))


def _summary(report: GradingReport, total: int, name: str, ws: str) -> None:
    table = Table(title=f"grading {name!r} in {ws}", show_header=False, title_style="bold", min_width=40)
    for label, value in (("trajectories", total), ("graded", report.graded), ("abstained", report.abstained),
                         ("outcomes added", report.written), ("failed", len(report.failed))):
        table.add_row(label, str(value))
    console.print(table)
    groups = _by_reason(report)
    if groups:
        failures = Table("reason", "trajectories", "e.g.", title="failures", title_style="bold yellow")
        for reason, tids in groups.items():
            failures.add_row(reason[:120], str(len(tids)), ", ".join(tids[:3]) + (" …" if len(tids) > 3 else ""))
        console.print(failures)


def grade(
    workspace: Annotated[str, typer.Argument(help="Workspace whose trajectories to grade.")],
    fn: Annotated[str, typer.Option("--fn", help="Grader as module:function. It gets one trajectory (lake row "
                                                 "plus parsed `messages`) and returns a score, a label, a "
                                                 "(score, label) pair, or None to abstain.")],
    day: Annotated[str | None, typer.Option("--day", help="Grade one day, YYYY-MM-DD.")] = None,
    start: Annotated[str | None, typer.Option("--from", help="First day to grade (inclusive).")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Last day to grade (inclusive).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Outcome name (default: the function's name).")] = None,
    source: Annotated[str, typer.Option("--source", help="Outcome source: judge, human, test, env, …")] = "judge",
    home: HomeOpt = None,
    json: JsonOpt = False,
) -> None:
    """Grade materialized trajectories with a function or LLM judge and land the outcomes in the workspace."""
    from pydantic import ValidationError
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from pipeline.schema import Outcome

    try:
        ws = Workspace.open(workspace, home=home, create=False)
        grader = load_grader(fn)
        name = name or fn.rsplit(":", 1)[-1].rsplit(".", 1)[-1]
        Outcome(trajectory_id="-", name=name, value=0.0, source=source)  # bad names fail here, not per row
        days, unmaterialized = select_days(ws, day, start, end)
    except ValidationError as exc:  # before ValueError, which it subclasses
        fail(f"invalid --name {name!r} or --source {source!r}: {exc.errors()[0]['msg']}")
    except (WorkspaceNotFound, ValueError) as exc:
        fail(str(exc))
    hint = (f"{', '.join(unmaterialized)} landed but not in the lake yet: run "
            f"`tracemill backfill --from {unmaterialized[0]} --to {unmaterialized[-1]}` first") if unmaterialized else ""
    if not days:
        fail(f"no materialized trajectories to grade in {workspace}" + (f"; {hint}" if hint else ""))
    if unmaterialized and not json:
        err.print(f"[yellow]skipping[/] {hint}")

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    total = 0
    with Progress(*columns, console=err, disable=json) as bar:
        task = bar.add_task(f"grading with {fn}", total=None)

        def started(n: int) -> None:
            nonlocal total
            total = n
            bar.update(task, total=n)

        report = grade_workspace(ws, grader, name=name, days=days, source=source, on_start=started,
                                 on_progress=lambda done: bar.update(task, completed=done))
    ws.close()
    ok = total > 0 and (report.graded + report.abstained > 0 or not report.failed)
    if json:
        sys.stdout.write(orjson.dumps({
            "ok": ok, "workspace": workspace, "fn": fn, "name": name, "source": source, "days": days,
            "not_materialized": unmaterialized, "trajectories": total, "graded": report.graded,
            "abstained": report.abstained, "outcomes_added": report.written, "failed": len(report.failed),
            "failures": report.failed, "failures_by_reason": {r: len(t) for r, t in _by_reason(report).items()},
        }).decode() + "\n")
    else:
        _summary(report, total, name, workspace)
        if report.written:
            console.print(f"{report.written} outcomes `{name}` landed in [bold]{workspace}[/]; the late-outcome "
                          "sensor (or `tracemill backfill`) joins them into those days")
    if not ok:
        raise typer.Exit(1)  # nothing graded at all: most likely the grader itself is broken
