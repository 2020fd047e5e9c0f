"""Join trajectories with their outcomes: the latest value per outcome name becomes a flat column.

Outcomes are read from the whole outcome table, not just the trajectory's day, so an outcome that
arrived days later (or before the trajectory itself) still joins. `reward` and `success` columns
always exist (null when missing) so filters such as `reward > 0` never fail on a quiet day.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
import polars as pl

from pipeline import lake
from pipeline.workspace import Workspace

ALWAYS = ("reward", "success")


def column_name(outcome_name: str) -> str:
    """Outcome names become column names: `judge.helpfulness` → `judge_helpfulness`."""
    return re.sub(r"[^A-Za-z0-9_]", "_", outcome_name)


def latest_outcomes(outcomes: pl.DataFrame) -> pl.DataFrame:
    """One row per (trajectory, step, name): the one recorded last (received last on ties)."""
    if outcomes.is_empty():
        return outcomes
    return (outcomes.sort("recorded_at", "received_ns")
            .group_by("trajectory_id", "step", "name", maintain_order=True).last())


def join_outcomes(trajectories: pl.DataFrame, outcomes: pl.DataFrame) -> pl.DataFrame:
    """Trajectories plus one column per outcome name (value), `<name>_label` where labels exist,
    `outcome_names` (list) and `step_outcomes_json` for per-step outcomes."""
    latest = latest_outcomes(outcomes)
    ids = trajectories.select("trajectory_id")
    if not latest.is_empty():
        latest = latest.join(ids, on="trajectory_id", how="semi")
    traj_level = latest.filter(pl.col("step").is_null()) if not latest.is_empty() else latest
    df = trajectories
    if not traj_level.is_empty():
        traj_level = traj_level.with_columns(pl.col("name").str.replace_all(r"[^A-Za-z0-9_]", "_"))  # = column_name
        values = traj_level.pivot(on="name", index="trajectory_id", values="value", aggregate_function="last")
        df = df.join(values, on="trajectory_id", how="left")
        labelled = traj_level.filter(pl.col("label").is_not_null())
        if not labelled.is_empty():
            labels = labelled.pivot(on="name", index="trajectory_id", values="label", aggregate_function="last")
            labels = labels.rename({c: f"{c}_label" for c in labels.columns if c != "trajectory_id"})
            df = df.join(labels, on="trajectory_id", how="left")
        names = traj_level.group_by("trajectory_id").agg(pl.col("name").sort().alias("outcome_names"))
        df = df.join(names, on="trajectory_id", how="left")
    else:
        df = df.with_columns(pl.lit(None, dtype=pl.List(pl.String)).alias("outcome_names"))
    for name in ALWAYS:
        if name not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=pl.Float64).alias(name))
    step_level = latest.filter(pl.col("step").is_not_null()) if not latest.is_empty() else latest
    if not step_level.is_empty():
        by_traj: dict[str, list[dict[str, Any]]] = {}
        for r in step_level.select("trajectory_id", "step", "name", "value", "label").to_dicts():
            by_traj.setdefault(r.pop("trajectory_id"), []).append(r)
        steps = pl.DataFrame({"trajectory_id": list(by_traj),
                              "step_outcomes_json": [orjson.dumps(v).decode() for v in by_traj.values()]},
                             schema={"trajectory_id": pl.String, "step_outcomes_json": pl.String})
        df = df.join(steps, on="trajectory_id", how="left")
    else:
        df = df.with_columns(pl.lit(None, dtype=pl.String).alias("step_outcomes_json"))
    return df.with_columns(pl.col("outcome_names").list.len().fill_null(0).alias("n_outcomes"))


def coverage(joined: pl.DataFrame) -> dict[str, Any]:
    """How many trajectories have which outcomes: the number a snapshot wait policy looks at."""
    total = joined.height
    out: dict[str, Any] = {"trajectories": total}
    if total == 0:
        return out | {"with_any_outcome": 0, "coverage": 0.0}
    with_any = int((joined["n_outcomes"] > 0).sum())
    out["with_any_outcome"] = with_any
    out["coverage"] = round(with_any / total, 4)
    names = joined.select(pl.col("outcome_names").explode().drop_nulls().value_counts(sort=True))
    out["by_name"] = {r["outcome_names"]: r["count"] for r in names.unnest("outcome_names").to_dicts()} \
        if names.height else {}
    return out


def join_day(ws: Workspace, day: str, outcomes: pl.DataFrame | None = None) -> pl.DataFrame:
    """Join one day partition against the whole outcome table and write `lake/joined/<day>.parquet`."""
    out = lake.read_outcomes(ws) if outcomes is None else outcomes
    joined = join_outcomes(lake.read_days([ws.raw_path(day)]), out)
    lake.write_parquet(joined, ws.joined_path(day))
    return joined
