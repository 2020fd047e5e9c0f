"""The lake-side stage functions: which joined days exist, read them, and bring the lake up to date
without an orchestrator. The Dagster assets and the CLI call these and only shape their results."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import polars as pl

from pipeline.capture.workspace import Workspace
from pipeline.lake import ingest as lake
from pipeline.lake.join import join_day


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


def refresh_lake(ws: Workspace) -> LakeRefresh:
    """Bring the lake up to date with the landing area without an orchestrator (CLI path):
    every landed day validated, all outcomes ingested, every day re-joined."""
    outcomes, _ = lake.ingest_outcomes(ws)
    lake.ingest_preferences(ws)
    days = trajectories = quarantined = 0
    for day in ws.days("trajectory"):
        df, stats = lake.ingest_trajectories(ws, day)
        join_day(ws, day, outcomes)
        days += 1
        trajectories += df.height
        quarantined += stats.quarantined
    return LakeRefresh(days, trajectories, quarantined)
