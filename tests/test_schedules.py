"""Nightly schedules, evaluated as the daemon would (one tick at a given time) against the real
Definitions, and the ingest tick's run executed for real on a temp home."""

from datetime import UTC, datetime

import dagster as dg
import pytest

from assets.definitions import build_definitions
from assets.schedules import INGEST_CRON, RETRAIN_CRON, build_schedules, retrain_asset_keys
from pipeline.capture.workspace import Workspace
from pipeline.config import CorpusSpec, TracemillConfig
from pipeline.demo.agents import populate

CFG = TracemillConfig(workspace="demo", partitions_start="2026-11-01", corpora=[
    CorpusSpec(name="sft", filter="reward > 0", target="deeplake://local/sft"),
    CorpusSpec(name="dpo", format="dpo", target="deeplake://local/dpo", init_from="sft"),
])


def _defs(cfg: TracemillConfig = CFG, **crons: str) -> tuple[dg.Definitions, dict[str, dg.ScheduleDefinition]]:
    base = build_definitions(cfg)
    schedules = build_schedules(list(base.jobs), cfg, **crons)
    defs = dg.Definitions(assets=base.assets, asset_checks=base.asset_checks, jobs=base.jobs, sensors=base.sensors,
                          schedules=schedules, resources=base.resources)
    dg.Definitions.validate_loadable(defs)
    return defs, {s.name: s for s in schedules}


def _tick(defs: dg.Definitions, schedule: dg.ScheduleDefinition, when: datetime):
    ctx = dg.build_schedule_context(scheduled_execution_time=when, repository_def=defs.get_repository_def())
    return schedule.evaluate_tick(ctx)


def test_schedules_are_running_by_default_with_utc_crons(monkeypatch):
    monkeypatch.delenv("TRACEMILL_INGEST_CRON", raising=False)
    monkeypatch.delenv("TRACEMILL_RETRAIN_CRON", raising=False)
    _, scheds = _defs()
    assert set(scheds) == {"nightly_ingest", "nightly_retrain"}
    assert scheds["nightly_ingest"].cron_schedule == INGEST_CRON
    assert scheds["nightly_retrain"].cron_schedule == RETRAIN_CRON
    for s in scheds.values():
        assert s.default_status == dg.DefaultScheduleStatus.RUNNING and s.execution_timezone == "UTC"
    assert scheds["nightly_ingest"].job_name == "ingest_daily"
    assert scheds["nightly_retrain"].job_name == "downstream_all"


def test_crons_from_env_and_arguments(monkeypatch):
    monkeypatch.setenv("TRACEMILL_RETRAIN_CRON", "15 4 * * *")
    _, scheds = _defs(ingest_cron="0 1 * * *")
    assert scheds["nightly_retrain"].cron_schedule == "15 4 * * *"
    assert scheds["nightly_ingest"].cron_schedule == "0 1 * * *"


@pytest.mark.parametrize("when,expected", [
    (datetime(2026, 11, 19, 0, 30, tzinfo=UTC), "2026-11-18"),
    (datetime(2026, 12, 1, 0, 30, tzinfo=UTC), "2026-11-30"),   # across a month boundary
    (datetime(2027, 1, 1, 0, 30, tzinfo=UTC), "2026-12-31"),    # and a year boundary
])
def test_nightly_ingest_requests_yesterday(when, expected):
    defs, scheds = _defs()
    data = _tick(defs, scheds["nightly_ingest"], when)
    assert data.skip_message is None
    [req] = data.run_requests
    assert req.partition_key == expected
    assert req.run_key == f"nightly-ingest-{expected}"  # idempotent: a re-evaluated tick is deduplicated
    assert req.tags["tracemill/reason"] == "nightly_ingest"


def test_nightly_ingest_skips_before_the_first_partition():
    defs, scheds = _defs()
    data = _tick(defs, scheds["nightly_ingest"], datetime(2026, 11, 1, 0, 30, tzinfo=UTC))
    assert not data.run_requests and "before the first partition" in data.skip_message


def test_nightly_retrain_refreshes_then_trains_every_corpus():
    defs, scheds = _defs()
    data = _tick(defs, scheds["nightly_retrain"], datetime(2026, 11, 19, 3, 0, tzinfo=UTC))
    [req] = data.run_requests
    names = {k.to_user_string() for k in req.asset_selection}
    assert names == {"base_model", "curated_sft", "corpus_sft", "checkpoint_sft", "eval_sft",
                     "curated_dpo", "corpus_dpo", "checkpoint_dpo", "eval_dpo"}
    assert req.run_key == "nightly-retrain-2026-11-19" and req.partition_key is None
    # one run, ordered by lineage, with the blocking corpus checks and eval gates included
    sub = defs.resolve_job_def("downstream_all").get_subset(asset_selection=set(retrain_asset_keys(CFG)))
    nodes = set(sub.graph.node_dict)
    assert {"corpus_sft_corpus_is_trainable", "eval_dpo_not_worse_than_previous"} <= nodes
    assert "outcomes" not in nodes and "joined_trajectories" not in nodes


def test_ingest_tick_runs_for_real(home):
    """The request the 00:30 tick makes, executed: yesterday's Parquet partition appears, today's not."""
    ws = Workspace.open("demo", home=home)
    populate(ws, days=["2026-11-18", "2026-11-19"], per_day=8, seed=3)
    defs, scheds = _defs()
    [req] = _tick(defs, scheds["nightly_ingest"], datetime(2026, 11, 19, 0, 30, tzinfo=UTC)).run_requests
    result = defs.resolve_job_def("ingest_daily").execute_in_process(
        partition_key=req.partition_key, tags=req.tags, instance=dg.DagsterInstance.ephemeral(),
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
    assert result.success
    assert ws.joined_path("2026-11-18").exists() and not ws.joined_path("2026-11-19").exists()
    mats = {(e.asset_key.to_user_string(), e.partition) for e in result.get_asset_materialization_events()}
    assert ("joined_trajectories", "2026-11-18") in mats and ("raw_trajectories", "2026-11-18") in mats


def test_the_definitions_module_carries_the_schedules():
    """The one Definitions object `dagster dev` loads has both schedules (wired in definitions.py)."""
    from assets.definitions import defs

    assert {s.name for s in defs.get_repository_def().schedule_defs} == {"nightly_ingest", "nightly_retrain"}
