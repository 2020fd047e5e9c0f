"""Dagster → structured logs: every tracemill event logged inside an asset or check carries the run id,
the asset and the partition(s), so a log line leads straight to its run in the UI (and back)."""

from typing import Any

import dagster as dg

from pipeline import logs


def dagster_ids() -> dict[str, Any]:
    """Ids of the Dagster step running in this thread, or nothing outside a run."""
    try:
        op = dg.OpExecutionContext.get()
    except dg.DagsterInvariantViolationError:
        return {}
    ids: dict[str, Any] = {"dagster_run_id": op.run.run_id, "step": op.op_def.name}
    if op.has_partition_key_range and op.partition_key_range.start != op.partition_key_range.end:
        ids["partitions"] = f"{op.partition_key_range.start}...{op.partition_key_range.end}"
    elif op.has_partition_key:
        ids["partition"] = op.partition_key
    return ids


def install() -> None:
    """Called when the definitions load: ids from Dagster, and a stream handler when
    TRACEMILL_LOG_FORMAT asks for one (the Dagster UI already captures the `tracemill` logger)."""
    import os

    logs.add_context_provider(dagster_ids)
    import logging

    root = logging.getLogger(logs.ROOT)
    if root.level == logging.NOTSET:  # info events (ingested, snapshot, …) reach the Dagster run log
        root.setLevel(logging.INFO)
    if os.environ.get("TRACEMILL_LOG_FORMAT"):
        logs.configure()
