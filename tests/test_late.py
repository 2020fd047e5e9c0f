"""Late outcomes: the sensor asks for exactly the partitions they touch; the wait policy holds snapshots."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl
import pytest

from assets.definitions import build_definitions
from assets.resources import TracemillResource
from pipeline.capture.workspace import Workspace
from pipeline.config import CorpusSpec, TracemillConfig
from pipeline.lake import ingest as lake
from pipeline.lake.join import join_day, join_outcomes
from pipeline.lake.late import parse_duration, scan_new_outcomes, wait_decision

DAYS = ["2026-11-16", "2026-11-17", "2026-11-18"]


def _traj(ws, tid, day):
    with ws.trajectory("a", trajectory_id=tid, task_id=tid, started_at=datetime.fromisoformat(f"{day}T10:00:00+00:00")) as r:
        r.user("q")
        r.assistant("a")


def _materialize_days(ws, days):
    outs, _ = lake.ingest_outcomes(ws)
    for d in days:
        lake.ingest_trajectories(ws, d)
        join_day(ws, d, outs)


def test_sensor_requests_exactly_the_partitions_with_late_outcomes(home):
    ws = Workspace.open("demo", home=home)
    for i, day in enumerate(DAYS):
        _traj(ws, f"t{i}", day)
    ws.record_outcome("t-future", "reward", 1.0)  # before its trajectory: nothing to re-join yet
    _materialize_days(ws, DAYS[:2])  # the third day is not materialized
    defs = build_definitions(TracemillConfig(workspace="demo", corpora=[CorpusSpec(name="sft", target="deeplake://l/s")]))
    sensor = defs.resolve_sensor_def("late_outcomes")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    resources = {"tracemill": TracemillResource(home=str(home), workspace="demo")}

    ctx = dg.build_sensor_context(resources=resources)
    first = list(sensor(ctx))
    assert [type(r) for r in first] == [dg.SkipReason]  # the early outcome touches no materialized day
    cursor = ctx.cursor

    ws.record_outcome("t1", "reward", 1.0)  # late, for 2026-11-17
    ws.record_outcome("t2", "reward", 0.0)  # for a day never materialized: the normal run will join it
    ctx = dg.build_sensor_context(cursor=cursor, resources=resources)
    reqs = [r for r in sensor(ctx) if isinstance(r, dg.RunRequest)]
    assert [r.partition_key for r in reqs] == ["2026-11-17"]
    # nothing new → no request, and the cursor does not re-read old bytes
    ctx2 = dg.build_sensor_context(cursor=ctx.cursor, resources=resources)
    assert not [r for r in sensor(ctx2) if isinstance(r, dg.RunRequest)]


def test_scan_ignores_half_written_lines(tmp_path):
    ws = Workspace.open("w", home=tmp_path)
    _traj(ws, "t0", DAYS[0])
    _materialize_days(ws, DAYS[:1])
    ws.record_outcome("t0", "reward", 1.0)
    path = next((ws.landing / "outcome").glob("*/*.ndjson"))
    with open(path, "ab") as fh:
        fh.write(b'{"t":1,"r":{"trajectory_id":"t0"')  # being written right now
    scan = scan_new_outcomes(ws, None)
    assert scan.days == [DAYS[0]] and scan.new_outcomes == 1
    assert scan.cursor[str(path)] < path.stat().st_size


def test_wait_policy():
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    traj = pl.DataFrame({"trajectory_id": ["a", "b", "c", "d"], "started_at": [now - timedelta(hours=1)] * 4,
                         "ended_at": [now - timedelta(hours=1)] * 4, "n_outcomes": [1, 1, 1, 0]})
    assert wait_decision(traj, 0.7, "6h", now).ready
    held = wait_decision(traj, 0.9, "6h", now)
    assert not held.ready and held.missing == ["d"] and "waiting" in held.reason
    later = wait_decision(traj, 0.9, "6h", now + timedelta(hours=6))
    assert later.ready and "max wait" in later.reason and later.as_dict()["missing_trajectory_ids"] == ["d"]
    assert parse_duration("90s") == timedelta(seconds=90)
    with pytest.raises(ValueError, match="unit"):
        parse_duration("6 hours")


def test_outcome_before_trajectory_joins_when_it_lands(tmp_path):
    ws = Workspace.open("w", home=tmp_path)
    ws.record_outcome("early", "reward", 1.0, recorded_at=datetime(2026, 11, 1, tzinfo=UTC))
    _traj(ws, "early", DAYS[0])
    traj, _ = lake.ingest_trajectories(ws, DAYS[0])
    outs, _ = lake.ingest_outcomes(ws)
    assert join_outcomes(traj, outs)["reward"].to_list() == [1.0]
