"""Late outcomes and the snapshot wait policy.

Rewards often arrive hours or days after their trajectory. `scan_new_outcomes` reads only the outcome
bytes landed since a cursor and says which *already materialized* day partitions they touch, so an
orchestrator re-joins exactly those days. Outcomes for trajectories not in the lake yet need nothing:
they join when their trajectory's partition is materialized.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import polars as pl

from pipeline import storage
from pipeline.capture.landing import segment_files
from pipeline.capture.workspace import Workspace
from pipeline.logs import event, get_logger

log = get_logger("late")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*\Z")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """`90s`, `30m`, `6h`, `2d` → timedelta; a clear error for anything else."""
    m = _DURATION.match(text or "")
    if not m:
        raise ValueError(f"duration {text!r} is invalid: use a number and a unit s, m, h or d (e.g. 6h)")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


@dataclass
class LateScan:
    days: list[str]
    new_outcomes: int
    cursor: dict[str, int]
    unmatched: int = 0  # outcomes whose trajectory is not in the lake (yet)
    trajectory_ids: list[str] = field(default_factory=list)


def trajectory_days(ws: Workspace, ids: Iterable[str] | None = None) -> dict[str, str]:
    """trajectory_id → day of its materialized raw partition, for `ids` only (every id when None).
    A lazy scan of the id column filtered to `ids`: polars pushes the filter into the Parquet reader
    and only the matches reach Python, however many trajectories the lake holds. An id present in
    two partitions maps to the later day."""
    paths = sorted((ws.lake / "trajectories").glob("*.parquet"))
    wanted = None if ids is None else sorted(set(ids))
    if not paths or wanted == []:
        return {}
    frames = [storage.scan_parquet(p).select("trajectory_id").with_columns(day=pl.lit(p.stem)) for p in paths]
    found = pl.concat(frames)
    if wanted is not None:
        found = found.filter(pl.col("trajectory_id").is_in(pl.Series(wanted, dtype=pl.String).implode()))
    df = found.collect()
    return dict(zip(df["trajectory_id"].to_list(), df["day"].to_list(), strict=True))


def scan_new_outcomes(ws: Workspace, cursor: dict[str, int] | None) -> LateScan:
    """Outcome bytes landed since `cursor` ({segment path: byte offset}) → affected materialized days.
    Only whole lines advance the cursor, so a line being written now is read next time."""
    cursor = dict(cursor or {})
    ids: list[str] = []
    for path in segment_files(ws.landing, "outcome"):
        start = cursor.get(str(path), 0)
        size = path.stat().st_size
        if size <= start:
            continue
        with path.open("rb") as fh:
            fh.seek(start)
            chunk = fh.read(size - start)
        end = chunk.rfind(b"\n") + 1
        for line in chunk[:end].splitlines():
            try:
                rec = orjson.loads(line).get("r") or {}
                if isinstance(rec, dict) and rec.get("trajectory_id"):
                    ids.append(str(rec["trajectory_id"]))
            except (orjson.JSONDecodeError, AttributeError):
                continue  # quarantined by the outcome ingest, nothing to re-join
        cursor[str(path)] = start + end
    if not ids:
        return LateScan([], 0, cursor)
    days_of = trajectory_days(ws, ids)
    touched = {days_of[t] for t in ids if t in days_of}
    materialized = sorted(d for d in touched if ws.joined_path(d).exists())
    event(log, "late outcomes", workspace=ws.name, new_outcomes=len(ids), days=materialized,
          unmatched=sum(t not in days_of for t in ids), trajectory_ids=sorted(set(ids))[:20])
    return LateScan(materialized, len(ids), cursor, unmatched=sum(t not in days_of for t in ids),
                    trajectory_ids=sorted(set(ids)))


@dataclass
class WaitDecision:
    ready: bool
    coverage: float
    missing: list[str]
    reason: str

    def as_dict(self, limit: int = 200) -> dict[str, Any]:
        return {"ready": self.ready, "coverage": self.coverage, "missing_outcomes": len(self.missing),
                "missing_trajectory_ids": self.missing[:limit], "reason": self.reason}


def wait_decision(joined: pl.DataFrame, coverage: float, max_wait: str, now: datetime | None = None) -> WaitDecision:
    """Snapshot now, or wait for outcomes? Ready when at least `coverage` of the trajectories have an
    outcome, or when every trajectory still missing one ended more than `max_wait` ago (it has been
    waited for long enough). The missing ids are returned so the snapshot can record them."""
    now = now or datetime.now(UTC)
    if joined.is_empty():
        return WaitDecision(True, 1.0, [], "no trajectories")
    has = joined["n_outcomes"] > 0 if "n_outcomes" in joined.columns else joined["reward"].is_not_null()
    cov = float(has.mean())
    missing_df = joined.filter(~has)
    missing = sorted(missing_df["trajectory_id"].to_list())
    if cov >= coverage:
        return WaitDecision(True, round(cov, 4), missing, f"coverage {cov:.2%} ≥ {coverage:.0%}")
    ended = missing_df["ended_at"].fill_null(missing_df["started_at"]).max()
    deadline = parse_duration(max_wait)
    if ended is None or now - ended >= deadline:
        return WaitDecision(True, round(cov, 4), missing, f"coverage {cov:.2%} but max wait {max_wait} passed")
    return WaitDecision(False, round(cov, 4), missing,
                        f"waiting: coverage {cov:.2%} < {coverage:.0%}, newest trajectory without "
                        f"an outcome ended {now - ended} ago (max {max_wait})")
