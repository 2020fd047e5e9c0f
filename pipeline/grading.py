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

from pipeline.lake import read_days
from pipeline.schema import Outcome, utcnow
from pipeline.workspace import Workspace

Grader = Callable[[dict[str, Any]], float | bool | str | tuple[float | None, str | None] | None]


@dataclass
class GradingReport:
    graded: int = 0
    abstained: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # trajectory_id → error


def _as_outcome(tid: str, name: str, result: Any, source: str, when: datetime) -> Outcome | None:
    if result is None:
        return None
    value, label = (result if isinstance(result, tuple) else
                    (None, result) if isinstance(result, str) else (float(result), None))
    return Outcome(trajectory_id=tid, name=name, value=value, label=label, source=source, recorded_at=when)


def grade_trajectories(rows: Iterable[dict[str, Any]], grader: Grader, *, name: str, source: str = "judge",
                       recorded_at: datetime | None = None) -> tuple[list[Outcome], GradingReport]:
    """Apply `grader` to each row (a lake row with `messages_json`); pure, so it is easy to test."""
    when, report, outs = recorded_at or utcnow(), GradingReport(), []
    for row in rows:
        tid = row["trajectory_id"]
        try:
            out = _as_outcome(tid, name, grader({**row, "messages": orjson.loads(row["messages_json"])}), source, when)
        except Exception as exc:  # a judge's bug must not lose the rest of the batch
            report.failed[tid] = f"{type(exc).__name__}: {exc}"
            continue
        if out is None:
            report.abstained += 1
        else:
            outs.append(out)
            report.graded += 1
    return outs, report


def grade_workspace(ws: Workspace, grader: Grader, *, name: str, days: list[str] | None = None,
                    where: pl.Expr | None = None, source: str = "judge") -> GradingReport:
    """Grade the materialized trajectories of some days and land the outcomes durably in the workspace."""
    days = days or sorted(p.stem for p in (ws.lake / "trajectories").glob("*.parquet"))
    df = read_days([ws.raw_path(d) for d in days])
    if where is not None and df.height:
        df = df.filter(where)
    outs, report = grade_trajectories(df.iter_rows(named=True), grader, name=name, source=source)
    ws.write_outcomes(outs)
    return report
