"""Grading hooks: a user function or an LLM-judge callable turns trajectories into outcomes.

A grader sees one trajectory (its flat lake row plus parsed `messages`) and returns a score, a label,
a `(score, label)` pair, or None to abstain. Its outcomes are ordinary Outcome records (source `judge`
by default), so they flow through the same join, late-outcome sensor and snapshots as rewards do.
A grader that raises is reported for that trajectory and never stops the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import polars as pl

from pipeline.capture.workspace import Workspace
from pipeline.lake.ingest import read_days
from pipeline.schema import Outcome, utcnow

Grader = Callable[[dict[str, Any]], float | bool | str | tuple[float | None, str | None] | None]


@dataclass
class GradingReport:
    graded: int = 0
    abstained: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # trajectory_id → error
    written: int = 0  # outcomes durably landed (grade_workspace only)


def _as_outcome(tid: str, name: str, result: Any, source: str, when: datetime) -> Outcome | None:
    if result is None:
        return None
    value, label = (result if isinstance(result, tuple) else
                    (None, result) if isinstance(result, str) else (float(result), None))
    return Outcome(trajectory_id=tid, name=name, value=value, label=label, source=source, recorded_at=when)


def grade_trajectories(rows: Iterable[dict[str, Any]], grader: Grader, *, name: str, source: str = "judge",
                       recorded_at: datetime | None = None,
                       on_progress: Callable[[int], None] | None = None) -> tuple[list[Outcome], GradingReport]:
    """Apply `grader` to each row (a lake row with `messages_json`); pure, so it is easy to test.
    `on_progress(done)` after each row lets a CLI show a bar while a slow judge works."""
    when, report, outs = recorded_at or utcnow(), GradingReport(), []
    for done, row in enumerate(rows, start=1):
        tid = row["trajectory_id"]
        try:
            out = _as_outcome(tid, name, grader({**row, "messages": orjson.loads(row["messages_json"])}), source, when)
        except Exception as exc:  # a judge's bug must not lose the rest of the batch
            report.failed[tid] = f"{type(exc).__name__}: {exc}"
        else:
            if out is None:
                report.abstained += 1
            else:
                outs.append(out)
                report.graded += 1
        if on_progress is not None:
            on_progress(done)
    return outs, report


def materialized_days(ws: Workspace) -> list[str]:
    """Days whose trajectories are in the lake (what grading reads), oldest first."""
    return sorted(p.stem for p in (ws.lake / "trajectories").glob("*.parquet"))


def grade_workspace(ws: Workspace, grader: Grader, *, name: str, days: list[str] | None = None,
                    where: pl.Expr | None = None, source: str = "judge",
                    on_start: Callable[[int], None] | None = None,
                    on_progress: Callable[[int], None] | None = None) -> GradingReport:
    """Grade the materialized trajectories of some days (None: all; [] grades nothing) and land the
    outcomes durably in the workspace. `on_start(total)` announces how many rows will be graded."""
    days = materialized_days(ws) if days is None else days
    df = read_days([ws.raw_path(d) for d in days])
    if where is not None and df.height:
        df = df.filter(where)
    if on_start is not None:
        on_start(df.height)
    outs, report = grade_trajectories(df.iter_rows(named=True), grader, name=name, source=source,
                                      on_progress=on_progress)
    report.written = ws.write_outcomes(outs) if outs else 0
    return report
