"""Join trajectories with their outcomes: the latest value per outcome name becomes a flat column.

Outcomes are read from the whole outcome table, not just the trajectory's day, so an outcome that
arrived days later (or before the trajectory itself) still joins. `reward` and `success` columns
always exist (null when missing) so filters such as `reward > 0` never fail on a quiet day.

Why it is built the way it is (1M trajectories x 2M outcomes on 2 cores, see bench/curate.py):
trajectory ids are strings, and hashing strings is the expensive part, so they are hashed exactly
once -- one join that maps each outcome to its trajectory's row number. Everything after that works
on integers: one stable sort by (row, name code, recorded_at, received_ns) leaves the latest outcome
per key last in its run (no group-by), and the flat columns are *gathered* into trajectory row order
and stacked next to the trajectory columns (no pivot, no join that copies the wide message text).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import orjson
import polars as pl
import pyarrow as pa

from pipeline.capture.workspace import Workspace
from pipeline.lake import ingest as lake

ALWAYS = ("reward", "success")
_UNSAFE = r"[^A-Za-z0-9_]"
_COLS = ["step", "name", "value", "label", "recorded_at", "received_ns"]


def column_name(outcome_name: str) -> str:
    """Outcome names become column names: `judge.helpfulness` → `judge_helpfulness`."""
    return re.sub(_UNSAFE, "_", outcome_name)


def latest_outcomes(outcomes: pl.DataFrame, key: str = "trajectory_id") -> pl.DataFrame:
    """One row per (key, step, name): the one recorded last (received last, then stored last, on
    ties), in the order each group first appears in time. Used as is for the (few) per-step outcomes;
    the flat columns compute the same thing on integer keys (`_latest_flat`), which is faster."""
    if outcomes.is_empty():
        return outcomes
    return (outcomes.sort("recorded_at", "received_ns", maintain_order=True)
            .group_by(key, "step", "name", maintain_order=True).last())


def _matched(trajectories: pl.DataFrame, outcomes: pl.DataFrame) -> pl.DataFrame:
    """Outcomes of these trajectories only, each with `row`: its trajectory's row number (the single
    string-keyed step). Outcome order is kept, so equal timestamps still resolve to the last stored."""
    rows = trajectories.select("trajectory_id").with_row_index("row")
    return outcomes.select("trajectory_id", *_COLS).join(rows, on="trajectory_id", how="inner",
                                                         maintain_order="left").drop("trajectory_id")


def _latest_flat(matched: pl.DataFrame) -> tuple[pl.DataFrame, list[str]]:
    """Trajectory-level outcomes, the latest per (row, column name), sorted by (row, name), and the
    column names (sorted). Names are folded to column names *before* taking the latest, so two names
    that fold together (`a.b`, `a_b`) give the value recorded last rather than an arbitrary one."""
    flat = matched.filter(pl.col("step").is_null()).with_columns(pl.col("name").str.replace_all(_UNSAFE, "_"))
    names = sorted(flat["name"].unique().drop_nulls().to_list())
    code = pl.col("name").cast(pl.Enum(names)).to_physical().cast(pl.Int64)
    keyed = flat.select("row", "value", "label", "recorded_at", "received_ns", code.alias("code"),
                        (pl.col("row").cast(pl.Int64) * max(len(names), 1) + code).alias("key"))
    keyed = keyed.sort("key", "recorded_at", "received_ns", maintain_order=True)
    last = pl.col("key") != pl.col("key").shift(-1, fill_value=-1)  # the last of each key's run
    return keyed.filter(last).select("row", "code", "value", "label"), names


def _gather(values: pl.Series, rows: np.ndarray, n: int) -> pl.Series:
    """`values[i]` placed at trajectory row `rows[i]`; null where no value lands (rows are unique)."""
    pos = np.full(n, len(values), dtype=np.int64)
    pos[rows] = np.arange(len(values))
    return pl.concat([values, pl.Series([None], dtype=values.dtype)], rechunk=False).gather(pos)


def _flat_columns(latest: pl.DataFrame, names: list[str], n: int, taken: set[str]) -> list[pl.Series]:
    """One value column per name, `<name>_label` where any latest label exists, `outcome_names` (sorted
    list, null when none) and `n_outcomes`, all in trajectory row order. A column name already taken
    (by a trajectory column) gets `_right`, as a join would name it."""
    def fresh(name: str) -> str:
        while name in taken:
            name += "_right"
        taken.add(name)
        return name

    rows, codes = latest["row"].to_numpy(), latest["code"].to_numpy()
    values, labels = [], []
    for c, name in enumerate(names):
        sel = codes == c
        part = latest.filter(pl.Series(sel))
        values.append(_gather(part["value"], rows[sel], n).alias(fresh(name)))
        if part["label"].null_count() < part.height:
            labels.append(_gather(part["label"], rows[sel], n).alias(f"{name}_label"))
    labels = [s.alias(fresh(s.name)) for s in labels]
    counts = np.bincount(rows, minlength=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    listed = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(np.array(names, dtype=object)[codes],
                                                                      type=pa.large_string()),
                                           mask=pa.array(counts == 0))
    outcome_names = pl.Series("outcome_names", listed, dtype=pl.List(pl.String))
    return [*values, *labels, outcome_names, pl.Series("n_outcomes", counts, dtype=pl.UInt32)]


def _step_json(matched: pl.DataFrame, n: int) -> pl.Series:
    """Per-step outcomes (a small share) as one JSON list per trajectory, latest per (step, name)."""
    steps = matched.filter(pl.col("step").is_not_null())
    if steps.is_empty():
        return pl.Series("step_outcomes_json", [None] * n, dtype=pl.String)
    latest = latest_outcomes(steps, key="row")
    by_row: dict[int, list[dict[str, Any]]] = {}
    for r in latest.select("row", "step", "name", "value", "label").to_dicts():
        by_row.setdefault(r.pop("row"), []).append(r)
    text = pl.Series([orjson.dumps(v).decode() for v in by_row.values()], dtype=pl.String)
    return _gather(text, np.fromiter(by_row, dtype=np.int64, count=len(by_row)), n).alias("step_outcomes_json")


def join_outcomes(trajectories: pl.DataFrame, outcomes: pl.DataFrame) -> pl.DataFrame:
    """Trajectories (order and columns unchanged) plus one column per outcome name (its latest value by
    `recorded_at`), `<name>_label` where labels exist, `outcome_names` (sorted list), `n_outcomes`
    and `step_outcomes_json` for per-step outcomes."""
    n = trajectories.height
    matched = _matched(trajectories, outcomes)
    latest, names = _latest_flat(matched)
    flat = _flat_columns(latest, names, n, set(trajectories.columns))
    df = trajectories.hstack(flat[:-2])
    missing = [pl.lit(None, dtype=pl.Float64).alias(a) for a in ALWAYS if a not in df.columns]
    return df.with_columns(flat[-2], *missing, _step_json(matched, n), flat[-1])


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
