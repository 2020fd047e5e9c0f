"""Landing → lake: validate landed records, quarantine the bad ones with their reason, write Parquet.

The lake keeps messages as one JSON string column (Arrow struct inference corrupts mixed tool
argument shapes) plus flat columns that filters and joins use. Each run rewrites its whole day
partition from the landing segments, so re-running is idempotent and re-sent ids collapse to one
row (the last one received wins).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import orjson
import polars as pl
from pydantic import ValidationError

from pipeline import storage
from pipeline.capture.fast_validate import (  # msgspec first, pydantic for what it refuses
    Rejected,
    validate_obj,
)
from pipeline.capture.landing import LandedLine, read_landed
from pipeline.capture.workspace import Workspace
from pipeline.json_rules import INT64_MAX
from pipeline.lake import incremental
from pipeline.lake import otlp_assembly as otlp_assemble
from pipeline.logs import event, get_logger
from pipeline.schema import Outcome, Preference, Trajectory, format_validation_error

log = get_logger("lake")

TRAJECTORY_SCHEMA: dict[str, Any] = {
    "trajectory_id": pl.String, "workspace": pl.String, "agent": pl.String, "agent_version": pl.String,
    "model": pl.String, "task_id": pl.String, "session_id": pl.String, "day": pl.String,
    "started_at": pl.Datetime("us", "UTC"), "ended_at": pl.Datetime("us", "UTC"),
    "n_messages": pl.Int32, "n_user": pl.Int32, "n_assistant": pl.Int32, "n_tool_calls": pl.Int32,
    "n_tool_errors": pl.Int32, "input_tokens": pl.Int64, "output_tokens": pl.Int64, "cost_usd": pl.Float64,
    "final_answer": pl.String, "messages_json": pl.String, "tools_json": pl.String,
    "metadata_json": pl.String, "received_ns": pl.Int64,
}
OUTCOME_SCHEMA: dict[str, Any] = {
    "outcome_id": pl.String, "trajectory_id": pl.String, "step": pl.Int32, "name": pl.String,
    "value": pl.Float64, "label": pl.String, "source": pl.String,
    "recorded_at": pl.Datetime("us", "UTC"), "received_ns": pl.Int64,
}
PREFERENCE_SCHEMA: dict[str, Any] = {
    "preference_id": pl.String, "chosen": pl.String, "rejected": pl.String, "task_id": pl.String,
    "source": pl.String, "recorded_at": pl.Datetime("us", "UTC"), "received_ns": pl.Int64,
}


@dataclass
class IngestStats:
    """What one ingest pass saw; goes straight into Dagster metadata."""

    lines: int = 0
    valid: int = 0
    quarantined: int = 0
    duplicates: int = 0
    reasons: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reasons"] = dict(self.reasons.most_common(10))
        return d


def flatten(traj: Trajectory, received_ns: int = 0) -> dict[str, Any]:
    """The flat row for one trajectory: ids and counts for filtering, messages kept as JSON."""
    msgs = traj.messages
    metas = [m.meta for m in msgs if m.meta is not None]
    final = next((m.content for m in reversed(msgs) if m.role == "assistant" and not m.tool_calls), None)
    return {
        "trajectory_id": traj.trajectory_id, "workspace": traj.workspace, "agent": traj.agent.name,
        "agent_version": traj.agent.version, "model": traj.model, "task_id": traj.task_id,
        "session_id": traj.session_id, "day": traj.day, "started_at": traj.started_at,
        "ended_at": traj.ended_at, "n_messages": len(msgs),
        "n_user": sum(m.role == "user" for m in msgs),
        "n_assistant": sum(m.role == "assistant" for m in msgs),
        "n_tool_calls": sum(len(m.tool_calls) for m in msgs),
        "n_tool_errors": sum(m.role == "tool" and m.is_error for m in msgs),
        # each count fits Int64 (json_rules); their sum saturates rather than fail the whole day
        "input_tokens": min(sum(m.input_tokens or 0 for m in metas), INT64_MAX) if metas else None,
        "output_tokens": min(sum(m.output_tokens or 0 for m in metas), INT64_MAX) if metas else None,
        "cost_usd": sum(m.cost_usd or 0.0 for m in metas) if metas else None,
        "final_answer": final,
        "messages_json": orjson.dumps([m.model_dump(mode="json", exclude_none=True) for m in msgs]).decode(),
        "tools_json": orjson.dumps(traj.tools).decode(),
        "metadata_json": orjson.dumps(traj.metadata, default=str).decode(),
        "received_ns": received_ns,
    }


write_parquet = storage.write_parquet  # atomic on a local disk and on object storage


def _write_quarantine(path: Path, items: list[dict[str, Any]]) -> None:
    if not items:
        storage.remove(path)
        return
    storage.write_bytes_atomic(path, b"".join(orjson.dumps(i, default=str) + b"\n" for i in items))


def _validated(ws: Workspace, kind: str, model: type, day: str | None, stats: IngestStats,
               bad: list[dict[str, Any]], lines: Iterable[LandedLine] | None = None):
    """Yield (received_ns, model) for every valid landed record (of `lines`, default every landed line
    of the kind and day); collect the rest in `bad`."""
    for line in read_landed(ws.landing, kind, day) if lines is None else lines:
        stats.lines += 1
        if line.error:  # unreadable (raw bytes kept), or read but refused upstream (record kept)
            reason = line.error
            raw: Any = line.raw.decode(errors="replace")[:10_000] if line.record is None else line.record
        else:
            try:
                yield line.received_ns, model.model_validate(line.record)
                stats.valid += 1
                continue
            except ValidationError as exc:
                reason, raw = format_validation_error(exc), line.record
        stats.quarantined += 1
        stats.reasons[reason.split(":")[0]] += 1
        bad.append({"source": line.source, "line": line.line_no, "reason": reason, "record": raw})
        rec = raw if isinstance(raw, dict) else {}
        event(log, "quarantined", logging.WARNING, workspace=ws.name, kind=kind, day=day,
              record_id=rec.get(f"{kind}_id") or rec.get("trajectory_id"), source=line.source,
              line=line.line_no, reason=reason)


def ingest_trajectories(ws: Workspace, day: str) -> tuple[pl.DataFrame, IngestStats]:
    """Validate one day's landed trajectories, and those assembled from its landed OTLP span
    fragments (`pipeline.lake.otlp_assembly`), into `lake/trajectories/<day>.parquet`."""
    stats, bad, latest = IngestStats(), [], {}
    lines = chain(read_landed(ws.landing, "trajectory", day), otlp_assemble.landed_lines(ws, day))
    for received, traj in _validated(ws, "trajectory", Trajectory, day, stats, bad, lines):
        prev = latest.get(traj.trajectory_id)
        if prev is not None:
            stats.duplicates += 1
        if prev is None or received >= prev[0]:
            latest[traj.trajectory_id] = (received, traj)
    rows = [flatten(t, r) for r, t in latest.values()]
    df = pl.DataFrame(rows, schema=TRAJECTORY_SCHEMA).sort("started_at", "trajectory_id")
    write_parquet(df, ws.raw_path(day))
    _write_quarantine(ws.quarantine_path("trajectory", day), bad)
    event(log, "ingested", workspace=ws.name, kind="trajectory", day=day, rows=df.height,
          quarantined=stats.quarantined, duplicates=stats.duplicates)
    return df, stats


def ingest_outcomes(ws: Workspace, full: bool = False) -> tuple[pl.DataFrame, IngestStats]:
    """Landed outcomes (any day) into `lake/outcomes.parquet`, one row per outcome_id (the latest
    received wins). Incremental: only lines landed since the last run are read and validated (see
    `pipeline.lake.incremental`); `full=True` re-reads everything."""
    return _ingest_accumulated(ws, "outcome", Outcome, OUTCOME_SCHEMA, ws.outcomes_path, full)


def ingest_preferences(ws: Workspace, full: bool = False) -> tuple[pl.DataFrame, IngestStats]:
    """Landed preferences into `lake/preferences.parquet`, incrementally like `ingest_outcomes`."""
    return _ingest_accumulated(ws, "preference", Preference, PREFERENCE_SCHEMA, ws.preferences_path, full)


def _ingest_accumulated(ws: Workspace, kind: str, model: type, schema: dict[str, Any], path: Path,
                        full: bool) -> tuple[pl.DataFrame, IngestStats]:
    """Merge the lines landed past the table's cursor into the table. The quarantine file is written
    before the table: the table (with its cursor) is the commit point, and quarantine entries past a
    stored cursor are dropped and re-derived by the next run, so a crash in between loses nothing."""
    key, qpath = f"{kind}_id", ws.quarantine_path(kind, "all")
    cursor = None if full else incremental.load_cursor(path)
    old = storage.read_parquet(path) if cursor is not None else pl.DataFrame(schema=schema)
    why = "requested" if full else "" if old.schema == pl.Schema(schema) else "table schema changed"
    delta = incremental.Delta(ws.landing, kind, cursor, why)
    if delta.full:
        old = pl.DataFrame(schema=schema)
    stats, bad = IngestStats(), []
    rows = [{**rec.model_dump(include=set(schema)), "received_ns": received}
            for received, rec in _validated(ws, kind, model, None, stats, bad, delta.lines())]
    if not (delta.full or stats.lines) and delta.cursor == cursor:
        return old, stats  # nothing landed since the last run: nothing to rewrite
    df, stats.duplicates = incremental.merge_latest(old, pl.DataFrame(rows, schema=schema), key,
                                                    ["recorded_at", key])
    _write_quarantine(qpath, delta.ordered(delta.carried_quarantine(qpath) + bad))
    write_parquet(df, path, metadata=delta.cursor.metadata())
    event(log, "ingested", workspace=ws.name, kind=kind, rows=df.height, lines=stats.lines,
          quarantined=stats.quarantined, duplicates=stats.duplicates, full=delta.full or None)
    return df, stats


def read_quarantine(ws: Workspace) -> list[dict[str, Any]]:
    items = []
    for path in sorted(ws.quarantine.glob("*/*.ndjson")):
        items.extend(orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip())
    return items


def read_days(paths: list[Path], schema: dict[str, Any] | None = None) -> pl.DataFrame:
    """Concatenate day partitions that exist; an empty frame with the schema when none do."""
    present = [p for p in paths if p.exists()]
    if not present:
        return pl.DataFrame(schema=schema or TRAJECTORY_SCHEMA)
    return pl.concat([storage.read_parquet(p) for p in present], how="diagonal_relaxed")


def read_outcomes(ws: Workspace) -> pl.DataFrame:
    path = ws.outcomes_path
    return storage.read_parquet(path) if path.exists() else pl.DataFrame(schema=OUTCOME_SCHEMA)


def quarantine_counts(ws: Workspace, days: list[str]) -> tuple[int, int]:
    """(valid, quarantined) trajectory counts over the given day partitions."""
    good = sum(storage.scan_parquet(ws.raw_path(d)).select(pl.len()).collect().item()
               for d in days if ws.raw_path(d).exists())
    bad = 0
    for d in days:
        path = ws.quarantine_path("trajectory", d)
        if path.exists():
            bad += sum(1 for line in path.read_bytes().splitlines() if line.strip())
    return good, bad


def workspace_counts(ws: Workspace) -> dict[str, int]:
    """Counts straight from the landing area (no pipeline run needed): what `workspace show` prints."""
    latest: dict[str, tuple[int, dict[str, Any]]] = {}
    unreadable = 0
    for line in read_landed(ws.landing, "trajectory"):
        if line.error or isinstance(validate_obj(line.record), Rejected):
            unreadable += 1
            continue
        tid = str(line.record.get("trajectory_id"))
        if tid not in latest or line.received_ns >= latest[tid][0]:
            latest[tid] = (line.received_ns, line.record)
    msgs = [m for _, rec in latest.values() for m in (rec.get("messages") or []) if isinstance(m, dict)]
    outcome_ids = {line.record.get("outcome_id") for line in read_landed(ws.landing, "outcome")
                   if not line.error and isinstance(line.record, dict)}
    prefs = sum(1 for line in read_landed(ws.landing, "preference") if not line.error)
    # OTLP spans become trajectories only at ingest (several requests per trace): count their traces
    traces = {line.record.get("trace_id") for line in read_landed(ws.landing, otlp_assemble.KIND)
              if not line.error and isinstance(line.record, dict)}
    quarantined = sum(1 for _ in read_quarantine(ws))
    return {
        "trajectories": len(latest), "messages": len(msgs),
        "tool_calls": sum(len(m.get("tool_calls") or []) for m in msgs),
        "otlp_traces": len(traces - {None}), "outcomes": len(outcome_ids), "preferences": prefs,
        "quarantined": max(quarantined, unreadable), "days": len(ws.days("trajectory")),
    }
