"""Nightly schedules: ingest yesterday's day partition, then refresh the corpora and retrain.

Why a schedule function and not `build_schedule_from_partitioned_job`: the day partitions have
`end_offset=1` (today is a partition, live agents write into it), so "the latest partition" at
00:30 is today's open day. The nightly ingest wants the day that just closed: yesterday.

Retraining is one run of `downstream_all` subset to corpus_refresh ∪ train_and_eval rather than two
runs, so Dagster orders it by the lineage (curate → snapshot → train → eval) and the blocking corpus
check stops training on a bad snapshot. Every corpus is requested: an unchanged corpus keeps its
version and the training stage reuses its checkpoint, so "only corpora whose data changed" costs a
version lookup, not a training run.

Crons (UTC) come from `TRACEMILL_INGEST_CRON` / `TRACEMILL_RETRAIN_CRON` or the arguments.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from datetime import date, timedelta

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from pipeline.config import TracemillConfig

INGEST_CRON = "30 0 * * *"  # 00:30 UTC: yesterday is closed, stragglers had half an hour
RETRAIN_CRON = "0 3 * * *"  # 03:00 UTC: after the ingest and the automation it triggers
Job = dg.JobDefinition | UnresolvedAssetJobDefinition  # what define_asset_job returns


def retrain_asset_keys(cfg: TracemillConfig) -> list[dg.AssetKey]:
    """corpus_refresh then train_and_eval, for every configured corpus."""
    names = [c.name for c in cfg.corpora]
    keys = ["base_model", *[f"{kind}_{n}" for kind in ("curated", "corpus", "checkpoint", "eval") for n in names]]
    return [dg.AssetKey(k) for k in keys]


def _job(jobs: Sequence[Job], name: str) -> Job:
    for job in jobs:
        if job.name == name:
            return job
    raise KeyError(f"no job named {name!r}; have {[j.name for j in jobs]}")


def ingest_schedule(job: Job, cfg: TracemillConfig, cron: str) -> dg.ScheduleDefinition:
    @dg.schedule(name="nightly_ingest", cron_schedule=cron, job=job, execution_timezone="UTC",
                 default_status=dg.DefaultScheduleStatus.RUNNING,
                 description="Validate and join yesterday's trajectories (the day that just closed).")
    def nightly_ingest(context: dg.ScheduleEvaluationContext) -> Iterator[dg.RunRequest | dg.SkipReason]:
        yesterday = (context.scheduled_execution_time.date() - timedelta(days=1)).isoformat()
        if date.fromisoformat(yesterday) < date.fromisoformat(cfg.partitions_start):
            yield dg.SkipReason(f"{yesterday} is before the first partition {cfg.partitions_start}")
            return
        # run_key: a tick evaluated twice (daemon restart) never ingests the same day twice
        yield dg.RunRequest(partition_key=yesterday, run_key=f"nightly-ingest-{yesterday}",
                            tags={"tracemill/reason": "nightly_ingest"})

    return nightly_ingest


def retrain_schedule(job: Job, cfg: TracemillConfig, cron: str) -> dg.ScheduleDefinition:
    keys = retrain_asset_keys(cfg)

    @dg.schedule(name="nightly_retrain", cron_schedule=cron, job=job, execution_timezone="UTC",
                 default_status=dg.DefaultScheduleStatus.RUNNING,
                 description="Refresh every corpus, then train and evaluate; unchanged corpora reuse "
                             "their checkpoint.")
    def nightly_retrain(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        day = context.scheduled_execution_time.date().isoformat()
        return dg.RunRequest(run_key=f"nightly-retrain-{day}", asset_selection=keys,
                             tags={"tracemill/reason": "nightly_retrain"})

    return nightly_retrain


def build_schedules(jobs: Sequence[Job], cfg: TracemillConfig, *, ingest_cron: str | None = None,
                    retrain_cron: str | None = None) -> list[dg.ScheduleDefinition]:
    """The nightly ingest (job `ingest_daily`) and the nightly retrain (job `downstream_all`)."""
    ingest_cron = ingest_cron or os.environ.get("TRACEMILL_INGEST_CRON") or INGEST_CRON
    retrain_cron = retrain_cron or os.environ.get("TRACEMILL_RETRAIN_CRON") or RETRAIN_CRON
    return [ingest_schedule(_job(jobs, "ingest_daily"), cfg, ingest_cron),
            retrain_schedule(_job(jobs, "downstream_all"), cfg, retrain_cron)]
