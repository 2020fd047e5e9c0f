"""The lake-side stage functions: which joined days exist, read them, and bring the lake up to date
without an orchestrator. The Dagster assets and the CLI call these and only shape their results."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import polars as pl

from pipeline import progress
from pipeline.capture.workspace import Workspace
from pipeline.lake import ingest as lake
from pipeline.lake.join import ALWAYS, column_name, join_day


@dataclass(frozen=True)
class LakeRefresh:
    """What `refresh_lake` did: days re-joined, trajectories in them, records quarantined."""

    days: int = 0
    trajectories: int = 0
    quarantined: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def __getitem__(self, key: str) -> int:
        """`refresh["days"]`: read access as when this was a dict (the CLI's JSON keeps those keys)."""
        return self.as_dict()[key]


def joined_days(ws: Workspace) -> list[str]:
    return sorted(p.stem for p in (ws.lake / "joined").glob("*.parquet"))


def read_joined(ws: Workspace) -> pl.DataFrame:
    return lake.read_days([ws.joined_path(d) for d in joined_days(ws)])


def joined_columns(outcomes: pl.DataFrame) -> dict[str, Any]:
    """The columns of a joined day (name -> dtype), known from the outcome table alone, before any
    trajectory is ingested: what a filter is checked against first (`join_outcomes` makes the same
    columns: one per outcome name, `<name>_label` where labels exist, a taken name gets `_right`)."""
    columns: dict[str, Any] = dict(lake.TRAJECTORY_SCHEMA)
    flat = outcomes.filter(pl.col("step").is_null())
    labelled = {column_name(n) for n in flat.filter(pl.col("label").is_not_null())["name"].unique().to_list()}
    names = sorted({column_name(n) for n in flat["name"].drop_nulls().unique().to_list()})
    for name, dtype in [*((n, pl.Float64) for n in names), *((f"{n}_label", pl.String) for n in names if n in labelled)]:
        while name in columns:
            name += "_right"
        columns[name] = dtype
    return {**columns, **{a: pl.Float64 for a in ALWAYS if a not in columns}, "outcome_names": pl.List(pl.String),
            "step_outcomes_json": pl.String, "n_outcomes": pl.UInt32}


def refresh_lake(ws: Workspace, check: Callable[[dict[str, Any]], Any] | None = None) -> LakeRefresh:
    """Bring the lake up to date with the landing area without an orchestrator (CLI path):
    every landed day validated, all outcomes ingested, every day re-joined. `check` sees the joined
    columns once outcomes are in and before the (long) trajectory ingest, so a bad filter fails first."""
    outcomes, _ = lake.ingest_outcomes(ws)
    if check is not None:
        check(joined_columns(outcomes))
    lake.ingest_preferences(ws)
    days = trajectories = quarantined = 0
    landed = ws.days("trajectory")
    for day in landed:
        df, stats = lake.ingest_trajectories(ws, day)
        join_day(ws, day, outcomes)
        days += 1
        trajectories += df.height
        quarantined += stats.quarantined
        progress.report(days, len(landed))  # the CLI's "ingest" row: days done of all landed days
    return LakeRefresh(days, trajectories, quarantined)
