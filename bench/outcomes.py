"""Outcome-ingest benchmark: a full ingest of every landed outcome vs an incremental one after 1% more
landed (half new outcomes, half re-scored ones), and the late-outcome id lookup over raw partitions.
Prints a table, then one line of JSON with every figure.

    .venv/bin/python bench/outcomes.py [--n 200000] [--days 10] [--repeat 2]

Outcomes land through the workspace's own landing writer, one segment per day, as the SDK does. The
full figure is what every nightly run cost before ingest became incremental; the incremental one must
stay near the cost of validating the new lines (re-reading and re-writing the table is polars work).
The incremental table is checked to equal a full rebuild of the same landing area. Figures are the
best of `--repeat` runs (each incremental run lands its own fresh 1%).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import storage
from pipeline.capture.workspace import Workspace  # noqa: E402
from pipeline.lake import ingest as lake  # noqa: E402
from pipeline.lake.late import trajectory_days  # noqa: E402

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def land(ws: Workspace, ids: range, days: int, value: float = 0.0) -> int:
    """Outcome records for `ids`, spread over `days` days, landed one batch per day."""
    by_day: dict[str, list[dict[str, Any]]] = {}
    for i in ids:
        at = T0 + timedelta(days=i % days, seconds=i % 3600)
        by_day.setdefault(at.date().isoformat(), []).append({
            "outcome_id": f"o{i}", "trajectory_id": f"t{i // 3}", "name": ("reward", "success", "judge.score")[i % 3],
            "value": value + (i % 7) / 7, "source": "env", "recorded_at": at.isoformat()})
    return sum(ws.writer.append("outcome", day, recs) for day, recs in by_day.items())


def timed(fn, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def bench_ingest(n: int, days: int, repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.create("bench", tmp)
        _, land_s = timed(land, ws, range(n), days)
        fulls = [timed(lake.ingest_outcomes, ws, full=True) for _ in range(repeat)]
        (df, stats), full_s = fulls[-1][0], min(s for _, s in fulls)
        assert stats.lines == n and df.height == n
        _, noop_s = timed(lake.ingest_outcomes, ws)
        step, landed, incs = max(n // 100, 2), n, []
        for r in range(repeat):
            landed += land(ws, range(n + r * step, n + r * step + step // 2), days)  # new outcomes
            landed += land(ws, range(r * step, r * step + step - step // 2), days, value=1.0)  # re-scored
            (inc, istats), inc_s = timed(lake.ingest_outcomes, ws)
            assert istats.lines == step and istats.duplicates == step - step // 2
            incs.append(inc_s)
        rebuilt, _ = lake.ingest_outcomes(ws, full=True)
        segments = len(list((ws.landing / "outcome").glob("*/*.ndjson")))
        ws.close()
        return {"n": n, "days": days, "segments": segments, "landed_lines": landed, "land_s": land_s,
                "full_s": full_s, "full_lines_per_s": n / full_s, "noop_incremental_s": noop_s,
                "new_lines": step, "incremental_s": min(incs), "incremental_ratio": min(incs) / full_s,
                "incremental_equals_full": rebuilt.equals(inc), "table_rows": inc.height}


def bench_trajectory_days(n: int, days: int, lookups: int) -> dict[str, Any]:
    """The late-outcome sensor's id → day lookup: every id into a dict (before) vs a filtered scan."""
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.create("bench", tmp)
        for d in range(days):
            ids = pl.Series("trajectory_id", [f"t{d}-{i}" for i in range(n // days)])
            storage.write_parquet(ids.to_frame(), ws.raw_path((T0 + timedelta(days=d)).date().isoformat()))
        wanted = [f"t{i % days}-{i}" for i in range(lookups)]

        def every_id() -> dict[str, str]:
            out = {}
            for path in sorted((ws.lake / "trajectories").glob("*.parquet")):
                for tid in storage.read_parquet(path, columns=["trajectory_id"])["trajectory_id"].to_list():
                    out[tid] = path.stem
            return {t: out[t] for t in wanted if t in out}

        before, before_s = timed(every_id)
        after, after_s = timed(trajectory_days, ws, wanted)
        assert before == after
        return {"lookup_trajectories": n, "lookup_ids": lookups, "lookup_every_id_s": before_s,
                "lookup_filtered_scan_s": after_s, "lookup_ratio": after_s / before_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000, help="outcomes landed before the full ingest")
    ap.add_argument("--days", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=2, help="runs per figure (best of)")
    args = ap.parse_args()
    figures: dict[str, Any] = {"polars": pl.__version__}
    figures |= bench_ingest(args.n, args.days, args.repeat)
    figures |= bench_trajectory_days(args.n, args.days, max(args.n // 100, 1))
    for key, value in figures.items():
        print(f"{key:28} {value:.3f}" if isinstance(value, float) else f"{key:28} {value}")
    print(orjson.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}).decode())


if __name__ == "__main__":
    main()
