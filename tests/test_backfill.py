"""`tracemill backfill`: a real three-day backfill through Dagster's Python API on a temp home, checked in
the Parquet lake and in the Dagster event log of the instance at that DAGSTER_HOME."""

import subprocess
import sys

import dagster as dg
import orjson
import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from assets.backfill import run_config
from assets.instance import ensure_dagster_home
from pipeline.capture.workspace import Workspace
from pipeline.cli.ops import backfill
from pipeline.demo.agents import populate
from pipeline.lake.backfill import BackfillEvent, days_in_range, event_line, parse_line, plan_backfill

DAYS = ["2026-11-16", "2026-11-17", "2026-11-18"]
PER_DAY = 10

app = typer.Typer()
app.command("backfill")(backfill)  # mounted exactly as on the main app
app.command("noop", hidden=True)(lambda: None)  # a second command keeps `backfill` a subcommand


@pytest.fixture
def instance_home(home, monkeypatch):
    dagster_home = home / "dagster"
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    return dagster_home


def test_backfill_three_days_through_the_cli(home, instance_home):
    ws = Workspace.open("demo", home=home)
    stats = populate(ws, days=DAYS, per_day=PER_DAY, seed=2)
    out = CliRunner().invoke(app, ["backfill", "--from", DAYS[0], "--to", DAYS[-1]])
    assert out.exit_code == 0, out.output
    assert "▶ raw_trajectories" in out.output and "2026-11-17: 10 valid" in out.output  # progress
    assert "2 Dagster runs" in out.output  # summary

    for day in DAYS:  # the lake: one Parquet partition per day, raw and joined
        assert pl.read_parquet(ws.raw_path(day)).height == PER_DAY
        joined = pl.read_parquet(ws.joined_path(day))
        assert joined.height == PER_DAY and "reward" in joined.columns
    assert ws.outcomes_path.exists() and stats.bad_records == 2

    with dg.DagsterInstance.get() as instance:  # the event log at $DAGSTER_HOME
        assert str(instance.root_directory) == str(instance_home)
        for asset in ("raw_trajectories", "joined_trajectories"):
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == set(DAYS)
            records = instance.fetch_materializations(dg.AssetKey(asset), limit=10).records
            assert sorted(r.partition_key for r in records) == DAYS
        assert instance.fetch_materializations(dg.AssetKey("outcomes"), limit=10).records
        runs = instance.get_runs()
        assert len(runs) == 2 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)


def test_backfill_json_summary_and_empty_days(home, instance_home):
    ws = Workspace.open("demo", home=home)
    populate(ws, days=DAYS[:1], per_day=PER_DAY, seed=5)
    out = CliRunner().invoke(app, ["backfill", "--from", DAYS[0], "--to", DAYS[1], "--json"])
    assert out.exit_code == 0, out.output
    summary = orjson.loads(out.stdout.strip().splitlines()[-1])
    assert summary["ok"] and summary["days"] == DAYS[:2] and summary["landed_days"] == DAYS[:1]
    assert summary["rows"] == {DAYS[0]: PER_DAY, DAYS[1]: 0}
    assert summary["materializations"] == {"outcomes": 1, "raw_trajectories": 2, "joined_trajectories": 2}


def test_backfill_stops_at_the_blocking_quarantine_check(home, instance_home):
    ws = Workspace.open("demo", home=home)
    populate(ws, days=DAYS[:1], per_day=4, seed=5)  # 2 bad records of 6 landed: 33% > 20%
    out = CliRunner().invoke(app, ["backfill", "--from", DAYS[0], "--to", DAYS[0]])
    assert out.exit_code == 1 and "backfill failed" in out.output
    assert "✗ raw_trajectories_quarantine_rate" in out.output
    assert ws.raw_path(DAYS[0]).exists() and not ws.joined_path(DAYS[0]).exists()  # nothing joined


def test_backfill_errors_are_clear(home, instance_home):
    assert "before --from" in CliRunner().invoke(app, ["backfill", "--from", DAYS[1], "--to", DAYS[0]]).output
    out = CliRunner().invoke(app, ["backfill", "--from", DAYS[0], "--to", DAYS[0], "--workspace", "nope"])
    assert out.exit_code == 1 and "does not exist" in out.output
    Workspace.create("other", home=home)  # the daemon cannot switch workspaces per backfill
    out = CliRunner().invoke(app, ["backfill", "--from", DAYS[0], "--to", DAYS[0], "--workspace", "other", "--daemon"])
    assert out.exit_code == 1 and "code location was started with" in out.output


def test_plan_and_parsing_without_dagster(home, instance_home):
    assert days_in_range("2026-12-30", "2027-01-02") == ["2026-12-30", "2026-12-31", "2027-01-01", "2027-01-02"]
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        days_in_range("2026-13-01", "2026-13-02")
    plan = plan_backfill(DAYS[0], DAYS[-1], workspace="other")
    assert plan.overrides_workspace and plan.command[-2:] == ["--workspace", "other"]
    assert plan.command[1:3] == ["-m", "assets.backfill"] and plan.command[3:7] == ["--from", DAYS[0], "--to", DAYS[-1]]
    ensure_dagster_home(instance_home)
    assert (instance_home / "dagster.yaml").exists()  # created for the instance, from the shipped settings
    # --workspace reaches the Definitions as run config on the resource, its other settings kept
    config = run_config("other")["resources"]["tracemill"]["config"]
    assert config["workspace"] == "other" and config["base_model"] == "tiny"
    ev = BackfillEvent("27d86862-8c68-4712-b01b-e7a71b7b5cbf", "ASSET_MATERIALIZATION", "raw_trajectories",
                       "Materialized value raw_trajectories.")
    assert parse_line(event_line(ev)) == ev
    log = parse_line(event_line(BackfillEvent("27d86862", "LOG", "raw_trajectories", "2026-11-16: 20 valid", "INFO")))
    assert (log.event, log.step, log.message) == ("LOG", "raw_trajectories", "2026-11-16: 20 valid")
    assert parse_line("2026-11-24 14:50:05 +0000 - dagster - WARNING - not ours") is None
    # pipeline/ stays free of Dagster: importing the command must not import it
    code = "import sys, pipeline.cli.ops, pipeline.lake.backfill; assert 'dagster' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
