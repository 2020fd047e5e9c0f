"""`tracemill trajectories list|show|publish` and `tracemill outcome record`: read captured trajectories
and their outcomes, add an outcome, from a terminal, and publish them as MLflow traces to read in its UI.

Why: before this, looking at what an agent did (and what it was scored) took Python and Parquet. Both
read the joined lake, brought up to date from the landing area first (`refresh_lake`, incremental), so
a trajectory shows up as soon as it has landed, with every outcome recorded for it so far.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import typer
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from pipeline.capture.workspace import Workspace, WorkspaceNotFound
from pipeline.cli.common import HomeOpt, JsonOpt, WorkspaceArg, console, fail, fail_filter, settings
from pipeline.traces import Score, TrajectoryTrace, log_traces, traces_link
from pipeline.tracking import MlflowTracker

trajectories_app = typer.Typer(help="List and read captured trajectories with their outcomes.", no_args_is_help=True)
outcome_app = typer.Typer(help="Record outcomes (rewards, ratings, labels) for trajectories.", no_args_is_help=True)

FilterOpt = Annotated[str | None, typer.Option("--filter", help="Filter expression over the joined columns, "
                                               "e.g. \"reward > 0 and agent = 'careful'\".")]
DayOpt = Annotated[str | None, typer.Option("--day", help="Only this day (YYYY-MM-DD, the capture day).")]
LimitOpt = Annotated[int, typer.Option("--limit", min=1, help="Show at most this many trajectories (newest first).")]
RefreshOpt = Annotated[bool, typer.Option("--refresh/--no-refresh",
                                          help="Bring the lake up to date with the landing area first.")]
TrajectoryIdArg = Annotated[str, typer.Argument(help="Trajectory id (`tracemill trajectories list` shows them).")]
SHOWN = ("trajectory_id", "day", "agent", "task_id", "n_messages", "n_tool_calls", "n_tool_errors")


def _open(name: str, home: str | None) -> Workspace:
    try:
        return Workspace.open(name, home=home, create=False)
    except (WorkspaceNotFound, ValueError) as exc:
        fail(str(exc))


def _joined(ws: Workspace, refresh: bool, filter_: str | None, day: str | None) -> Any:
    """The joined trajectories, filtered; a bad filter fails (with a caret) before the lake is read."""
    import polars as pl

    from pipeline.lake.filters import FilterError, apply_filter, compile_filter
    from pipeline.lake.stages import read_joined, refresh_lake

    try:
        if refresh:
            refresh_lake(ws, check=lambda columns: compile_filter(filter_, columns))
        df = read_joined(ws)
        if day is not None:
            df = df.filter(pl.col("day") == day) if "day" in df.columns else df.clear()
        return apply_filter(df, filter_) if filter_ else df
    except FilterError as exc:
        fail_filter(exc)


def _outcome_columns(df: Any) -> list[str]:
    """The flat outcome columns a join made (one per outcome name), in the joined frame's order."""
    from pipeline.lake.ingest import TRAJECTORY_SCHEMA

    skip = {"outcome_names", "step_outcomes_json", "n_outcomes"}
    return [c for c in df.columns if c not in TRAJECTORY_SCHEMA and c not in skip and not c.endswith("_label")]


@trajectories_app.command("list")
def list_trajectories(workspace: WorkspaceArg, filter: FilterOpt = None, day: DayOpt = None, limit: LimitOpt = 50,
                      refresh: RefreshOpt = True, home: HomeOpt = None, json: JsonOpt = False):
    """List trajectories (newest first) with their latest outcomes; `show` reads one in full."""
    df = _joined(_open(workspace, home), refresh, filter, day)
    total = df.height
    if total:
        df = df.sort("started_at", "trajectory_id", descending=True).head(limit)
    cols = [c for c in SHOWN if c in df.columns] + _outcome_columns(df)
    rows = df.select(cols).to_dicts() if total else []
    if json:
        console.print_json(orjson.dumps({"total": total, "trajectories": rows}, default=str).decode())
        return
    table = Table(*cols, title=f"{workspace}: {len(rows)} of {total} trajectories", title_style="bold")
    for r in rows:
        table.add_row(*("" if r[c] is None else f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in cols))
    console.print(table)


def _message(m: dict[str, Any]) -> Panel:
    """One message: its text (reasoning dimmed), each tool call with its arguments, a tool error in red."""
    body = Text()
    if m.get("reasoning"):
        body.append(m["reasoning"] + "\n", style="dim italic")
    if m.get("content"):
        body.append(m["content"])
    for call in m.get("tool_calls") or []:
        body.append(f"\n→ {call.get('name')}({call.get('arguments', '{}')})", style="cyan")
    title = m.get("role", "?") + (f" · {m['name']}" if m.get("name") else "")
    style = "red" if m.get("is_error") else {"user": "green", "assistant": "blue", "tool": "yellow"}.get(m.get("role"), "")
    return Panel(body, title=title, title_align="left", border_style=style)


@trajectories_app.command("show")
def show_trajectory(workspace: WorkspaceArg, trajectory_id: TrajectoryIdArg, refresh: RefreshOpt = True, home: HomeOpt = None,
                    json: JsonOpt = False):
    """One trajectory in full: its messages and tool calls, then every outcome recorded for it."""
    import polars as pl

    from pipeline.lake.ingest import read_outcomes

    ws = _open(workspace, home)
    found = _joined(ws, refresh, None, None)
    found = found.filter(pl.col("trajectory_id") == trajectory_id) if found.height else found
    if not found.height:
        fail(f"trajectory {trajectory_id!r} is not in workspace {workspace!r}: "
             f"`tracemill trajectories list {workspace}` shows the ids")
    row = found.row(0, named=True)
    messages = orjson.loads(row["messages_json"] or "[]")
    outcomes = read_outcomes(ws).filter(pl.col("trajectory_id") == trajectory_id).sort("recorded_at")
    if json:
        console.print_json(orjson.dumps({**{k: row[k] for k in SHOWN if k in row}, "messages": messages,
                                         "outcomes": outcomes.to_dicts()}, default=str).decode())
        return
    console.print(Text.assemble((trajectory_id, "bold"), f"  agent {row['agent']} · task {row['task_id']} · "
                                f"day {row['day']} · {row['n_messages']} messages, {row['n_tool_calls']} tool calls"))
    for m in messages:
        console.print(_message(m))
    table = Table("name", "value", "label", "step", "source", "recorded_at", title="outcomes", title_style="bold")
    for o in outcomes.iter_rows(named=True):
        table.add_row(o["name"], "" if o["value"] is None else f"{o['value']:g}", o["label"] or "",
                      "" if o["step"] is None else str(o["step"]), o["source"], str(o["recorded_at"]))
    console.print(table if outcomes.height else Text("no outcomes recorded", style="dim"))


def parse_value(text: str) -> tuple[float | bool | None, str | None]:
    """VALUE as (value, label): a number, true/false, or any other word as a label without a value."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true", None
    try:
        return float(text), None
    except ValueError:
        return None, text


@outcome_app.command("record")
def record_outcome(workspace: WorkspaceArg, trajectory_id: TrajectoryIdArg,
                   name: Annotated[str, typer.Argument(help="Outcome name, e.g. reward or helpful.")],
                   value: Annotated[str, typer.Argument(help="A number, true/false, or a word (kept as a label).")],
                   source: Annotated[str, typer.Option(help="Who scored it: human, judge, env, test…")] = "human",
                   home: HomeOpt = None):
    """Record outcome NAME = VALUE (a number, true/false, or a word kept as a label) for a trajectory;
    the next `list`/`show` (or the late-outcome sensor) joins it in."""
    from pydantic import ValidationError

    ws = _open(workspace, home)
    number, label = parse_value(value)
    try:
        out = ws.record_outcome(trajectory_id, name, number, label=label, source=source)
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"outcome {'.'.join(map(str, first['loc']))}: {first['msg']} (NAME is a letter or _ then "
             f"letters, digits, _ . -)")
    shown = out.label if out.value is None else f"{out.value:g}"
    console.print(f"recorded {name} = {shown} for {trajectory_id} in {workspace} (source {source})")


def _as_trace(row: dict[str, Any], outcomes: list[dict[str, Any]], workspace: str, redact: bool) -> Any:
    """One joined lake row and its outcomes as a trace: tags to search by, scalar metadata as context."""
    messages = orjson.loads(row["messages_json"] or "[]")
    if redact:
        from pipeline.corpus.redact import Redactor

        messages, _ = Redactor().redact_data(messages)
    meta = orjson.loads(row.get("metadata_json") or "{}")
    scores = [Score(o["name"], o["value"] if o["value"] is not None else o["label"], o["source"] or "env",
                    step=o["step"]) for o in outcomes if o["value"] is not None or o["label"]]
    started, ended = row.get("started_at"), row.get("ended_at")
    tags = {"workspace": workspace, "agent": row.get("agent"), "task_id": row.get("task_id"), "day": row.get("day"),
            "model": row.get("model"), "tracemill.kind": "captured"}
    return TrajectoryTrace(
        key=row["trajectory_id"], name=f"{row.get('agent')} · {row.get('task_id') or row['trajectory_id']}",
        messages=messages, scores=scores, tags={k: str(v) for k, v in tags.items() if v is not None},
        metadata={k: str(v)[:250] for k, v in meta.items() if isinstance(v, str | int | float | bool)},
        outputs=row.get("final_answer"), started_at=started,
        seconds=(ended - started).total_seconds() if started and ended and ended > started else None)


@trajectories_app.command("publish")
def publish_trajectories(
        workspace: WorkspaceArg, filter: FilterOpt = None, day: DayOpt = None,
        limit: Annotated[int, typer.Option("--limit", min=1, help="Publish at most this many (newest first).")] = 50,
        experiment: Annotated[str | None, typer.Option(
            "--experiment", help="MLflow experiment to publish into (default: the workspace's name).")] = None,
        redact: Annotated[bool, typer.Option("--redact", help="Mask emails, keys, phone numbers… in the messages "
                                             "first (as curation does), e.g. before a shared tracking server.")] = False,
        refresh: RefreshOpt = True, home: HomeOpt = None, json: JsonOpt = False):
    """Publish trajectories as MLflow traces (a span per turn and tool call, outcomes as assessments), to read
    them in MLflow's Traces tab; one already published there is skipped."""
    import polars as pl

    from pipeline.lake.ingest import read_outcomes

    ws = _open(workspace, home)
    df = _joined(ws, refresh, filter, day)
    rows = df.sort("started_at", "trajectory_id", descending=True).head(limit).to_dicts() if df.height else []
    ids = [r["trajectory_id"] for r in rows]
    outcomes = read_outcomes(ws).filter(pl.col("trajectory_id").is_in(ids)).sort("recorded_at").to_dicts()
    by_id: dict[str, list[dict[str, Any]]] = {}
    for o in outcomes:
        by_id.setdefault(o["trajectory_id"], []).append(o)
    tracker = MlflowTracker(settings(home).tracking_uri, experiment=experiment or workspace)
    done = log_traces(tracker, [_as_trace(r, by_id.get(r["trajectory_id"], []), workspace, redact) for r in rows])
    link = traces_link(tracker)
    if json:
        console.print_json(orjson.dumps({"published": len(done.trace_ids), "skipped": done.skipped, "matched": df.height,
                                         "experiment": tracker.experiment, "experiment_id": tracker.experiment_id,
                                         "trace_ids": done.trace_ids, "url": link}).decode())
        return
    console.print(f"published {len(done.trace_ids)} of {df.height} trajectories as MLflow traces in experiment "
                  f"[bold]{tracker.experiment}[/]" + (f" ({done.skipped} already there)" if done.skipped else ""))
    console.print(f"open {link}" + ("" if tracker.tracking_uri.startswith("http") else
                                    f"  (with `make mlflow-ui`, or `mlflow ui --backend-store-uri {tracker.tracking_uri}`)"))
