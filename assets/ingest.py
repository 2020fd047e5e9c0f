"""Capture-stage assets: landing → validated day partitions, the outcome table, the outcome join."""


import time

import dagster as dg
import polars as pl

from assets.resources import TracemillResource
from assets.versions import room_version
from pipeline.lake import ingest as lake
from pipeline.lake import join
from pipeline.previews import counts_table, markdown_table

PREVIEW = ["trajectory_id", "agent", "task_id", "n_messages", "n_tool_calls", "final_answer"]


def day_partitions(start: str) -> dg.DailyPartitionsDefinition:
    # end_offset=1 makes today's (still open) day a partition too: live agents write into it.
    return dg.DailyPartitionsDefinition(start_date=start, end_offset=1)


def build_ingest_assets(partitions: dg.DailyPartitionsDefinition) -> list:
    @dg.asset(group_name="capture", partitions_def=partitions, kinds={"parquet", "polars"},
              code_version=room_version("capture", "lake"), backfill_policy=dg.BackfillPolicy.single_run(),
              description="Landed trajectories of one day, validated into Parquet; bad records quarantined.")
    def raw_trajectories(context: dg.AssetExecutionContext, tracemill: TracemillResource) -> dg.MaterializeResult:
        started, ws = time.perf_counter(), tracemill.open_workspace()
        frames, totals = [], lake.IngestStats()
        for day in context.partition_keys:
            df, stats = lake.ingest_trajectories(ws, day)
            context.log.info(f"{day}: {stats.valid} valid, {stats.quarantined} quarantined")
            frames.append(df)
            totals.lines += stats.lines
            totals.valid += stats.valid
            totals.quarantined += stats.quarantined
            totals.duplicates += stats.duplicates
            totals.reasons.update(stats.reasons)
        df = pl.concat(frames) if frames else pl.DataFrame(schema=lake.TRAJECTORY_SCHEMA)
        return dg.MaterializeResult(metadata={
            "dagster/row_count": df.height, "duration_s": round(time.perf_counter() - started, 2),
            "landed_lines": totals.lines,
            "quarantined": totals.quarantined,
            "duplicates_collapsed": totals.duplicates,
            "quarantine_reasons": dg.MetadataValue.md(counts_table(dict(totals.reasons), "reason")),
            "messages": int(df["n_messages"].sum() or 0),
            "tool_calls": int(df["n_tool_calls"].sum() or 0),
            "agents": dg.MetadataValue.json(dict(df["agent"].value_counts().iter_rows()) if df.height else {}),
            "preview": dg.MetadataValue.md(markdown_table(df, PREVIEW)),
            "path": dg.MetadataValue.path(str(ws.lake / "trajectories")),
        })

    @dg.asset_check(asset=raw_trajectories, blocking=True,
                    description="Fails when more than 20% of landed records were quarantined.")
    def quarantine_rate(context: dg.AssetCheckExecutionContext, tracemill: TracemillResource) -> dg.AssetCheckResult:
        ws = tracemill.open_workspace()
        days = context.partition_keys if context.has_partition_key_range or context.has_partition_key \
            else ws.days("trajectory")
        good, bad = lake.quarantine_counts(ws, days)
        rate = bad / (good + bad) if good + bad else 0.0
        return dg.AssetCheckResult(passed=rate <= 0.2, metadata={"quarantine_rate": round(rate, 4),
                                                                 "valid": good, "quarantined": bad})

    @dg.asset(group_name="capture", kinds={"parquet", "polars"}, code_version=room_version("capture", "lake"),
              description="Every outcome ever landed (rewards, success, ratings); late ones included.")
    def outcomes(tracemill: TracemillResource) -> dg.MaterializeResult:
        started, ws = time.perf_counter(), tracemill.open_workspace()
        df, stats = lake.ingest_outcomes(ws)
        prefs, _ = lake.ingest_preferences(ws)
        by_name = dict(df["name"].value_counts().iter_rows()) if df.height else {}
        return dg.MaterializeResult(metadata={
            "dagster/row_count": df.height, "quarantined": stats.quarantined,
            "duration_s": round(time.perf_counter() - started, 2),
            "duplicates_collapsed": stats.duplicates, "preferences": prefs.height,
            "by_name": dg.MetadataValue.md(counts_table(by_name, "outcome")),
            "latest_recorded_at": str(df["recorded_at"].max()) if df.height else "",
            "path": dg.MetadataValue.path(str(ws.outcomes_path)),
        })

    @dg.asset(group_name="capture", partitions_def=partitions, deps=[raw_trajectories, outcomes],
              kinds={"parquet", "polars"}, backfill_policy=dg.BackfillPolicy.single_run(),
              code_version=room_version("capture", "lake"), description="One day's trajectories with the latest outcome per name as flat columns.")
    def joined_trajectories(context: dg.AssetExecutionContext, tracemill: TracemillResource) -> dg.MaterializeResult:
        started, ws = time.perf_counter(), tracemill.open_workspace()
        out = lake.read_outcomes(ws)
        frames = [join.join_day(ws, day, out) for day in context.partition_keys]
        df = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
        cov = join.coverage(df) if df.height else {"trajectories": 0, "coverage": 0.0}
        return dg.MaterializeResult(metadata={
            "dagster/row_count": df.height, "outcome_coverage": cov.get("coverage", 0.0),
            "duration_s": round(time.perf_counter() - started, 2),
            "coverage": dg.MetadataValue.json(cov),
            "mean_reward": float(df["reward"].mean()) if df.height and df["reward"].null_count() < df.height else 0.0,
            "preview": dg.MetadataValue.md(markdown_table(df, ["trajectory_id", "agent", "task_id", "reward", "success"])),
        })

    return [raw_trajectories, quarantine_rate, outcomes, joined_trajectories]
