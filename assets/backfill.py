"""Run a capture-stage backfill through Dagster's Python API: `python -m assets.backfill --from D --to D`.

`tracemill backfill` (pipeline/cli/ops.py) starts this module and reads its stdout: one JSON line
per Dagster event-log record, then one result line (the types are in pipeline/lake/backfill.py).
The runs go through `execute_job` on `DagsterInstance.get()`, so they are recorded in
`$DAGSTER_HOME`'s event log exactly like a run launched from the UI, and the events streamed are the
records of that log (read back while the run goes), not Dagster's console output.

Two runs, not one: a partition range in one run needs `BackfillPolicy.single_run()` on every
selected asset, and `outcomes` is one unpartitioned table ("every outcome ever landed") without one.
So `outcomes` is refreshed first, then `raw_trajectories,joined_trajectories` run for the whole range
in one run (each asset loops over `context.partition_keys`). Both use the in-process executor by
default: the capture steps are light and sequential, and a process per step costs ~3 s each on 2 cores.

The workspace is run config on the `tracemill` resource: the run itself says which workspace it
read, and no config file is rewritten to switch it. `--daemon` instead queues one `ingest_daily` run
per day for the running daemon (`make ui`) through Dagster's own `job backfill` command and returns.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Sequence

import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableRepository

from assets.definitions import defs
from assets.instance import DEFINITIONS_MODULE, dagster_home_for, ensure_dagster_home
from pipeline.lake.backfill import BackfillEvent, BackfillResult, days_in_range, event_line, result_line

RUNS: tuple[tuple[str, ...], ...] = (("outcomes",), ("raw_trajectories", "joined_trajectories"))
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}  # the event stream tells the story
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
BACKFILL_TAG = "tracemill/backfill"  # finds the run `execute_job` creates, to follow its event log


def capture_job(selection: Sequence[str]) -> dg.JobDefinition:
    """The implicit asset job holding the selected assets (what `dagster asset materialize` picks)."""
    job = defs.get_repository_def().get_implicit_job_def_for_assets([dg.AssetKey(a) for a in selection])
    if job is None:
        raise ValueError(f"{list(selection)} do not share one partitions definition")
    return job


def run_config(workspace: str, in_process: bool = True) -> dict:
    """Run config pointing the `tracemill` resource at `workspace`. A run that configures a resource
    replaces all of its configured values, so the others (env vars of a profile included) are carried
    over from the Definitions."""
    configured = defs.resources["tracemill"].get_resource_definition().config_schema.default_value
    resources = {"tracemill": {"config": {**configured, "workspace": workspace}}}
    return {"resources": resources, **QUIET, **(IN_PROCESS if in_process else {})}


def to_event(entry: dg.EventLogEntry) -> BackfillEvent:
    """An event-log record as the typed event the CLI reads: the event type's name (RUN_START, not its
    stored value PIPELINE_START); user log lines become event "LOG"."""
    level = logging.getLevelName(entry.level) if isinstance(entry.level, int) else str(entry.level)
    ev = entry.dagster_event
    if ev is None:
        return BackfillEvent(entry.run_id, "LOG", entry.step_key, entry.user_message, level)
    return BackfillEvent(entry.run_id, ev.event_type.name, ev.step_key, ev.message or entry.user_message, level)


class EventTail:
    """Follows the event log of the run tagged `token` while it runs, in a thread, and once more at the
    end: works for the in-process and the multiprocess executor alike (both write to the instance)."""

    def __init__(self, instance: dg.DagsterInstance, token: str, emit: Callable[[BackfillEvent], None]):
        self.instance, self.token, self.emit = instance, token, emit
        self.run_id: str | None = None
        self.cursor: str | None = None
        self.seen: set[int] = set()  # storage ids already emitted
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._follow, daemon=True)

    def poll(self, cursor: str | None = None, *, advance: bool = True) -> None:
        if self.run_id is None:
            runs = self.instance.get_run_records(dg.RunsFilter(tags={BACKFILL_TAG: self.token}), limit=1)
            if not runs:
                return
            self.run_id = runs[0].dagster_run.run_id
        cursor = self.cursor if advance else cursor
        while True:
            page = self.instance.get_records_for_run(self.run_id, cursor=cursor)
            for record in page.records:
                if record.storage_id not in self.seen:
                    self.seen.add(record.storage_id)
                    self.emit(to_event(record.event_log_entry))
            cursor = page.cursor
            if advance:
                self.cursor = cursor
            if not page.has_more:
                return

    def _follow(self) -> None:
        while not self.done.wait(0.25):
            self.poll()

    def __enter__(self) -> EventTail:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()
        # the whole run once more, from its first record: a record committed after one with a higher id
        # (two writers) would be behind the live cursor; `seen` keeps every record to one emit
        self.poll(None, advance=False)


def execute(instance: dg.DagsterInstance, selection: Sequence[str], tags: dict[str, str], config: dict,
            emit: Callable[[BackfillEvent], None]) -> bool:
    """One run of the selected assets on the instance; True when it succeeded."""
    token = uuid.uuid4().hex
    # reconstructable from the Definitions module, as Dagster's own CLI does: a step process
    # (`--multiprocess`) rebuilds the job by importing it (the implicit asset job has a reserved name,
    # which rules out the public `build_reconstructable_job`)
    repository = ReconstructableRepository.for_module(DEFINITIONS_MODULE, "defs", working_directory=os.getcwd())
    job = repository.get_reconstructable_job(capture_job(selection).name)
    with EventTail(instance, token, emit):
        try:
            with dg.execute_job(job, instance, run_config=config, tags={**tags, BACKFILL_TAG: token},
                                asset_selection=[dg.AssetKey(a) for a in selection]) as result:
                return result.success
        except Exception as exc:  # a run that could not start (bad config, unknown partition): say why
            emit(BackfillEvent("", "RUN_FAILURE", None, f"{type(exc).__name__}: {exc}", "ERROR"))
            return False


def backfill(days: list[str], workspace: str, in_process: bool = True,
             emit: Callable[[BackfillEvent], None] = lambda ev: None) -> BackfillResult:
    """`outcomes`, then the partitioned capture assets over `days`; stops at the first failing run
    (joining against a stale outcome table would be silently wrong)."""
    result = BackfillResult(days)

    def record(ev: BackfillEvent) -> None:
        result.record(ev)
        emit(ev)

    config = run_config(workspace, in_process)
    with dg.DagsterInstance.get() as instance:
        for selection in RUNS:
            partitioned = any(capture_job(selection).asset_layer.get(dg.AssetKey(a)).partitions_def
                              for a in selection)
            tags = {RANGE_START: days[0], RANGE_END: days[-1]} if partitioned else {}
            if not execute(instance, selection, tags, config, record):
                result.returncode = 1
                break
    return result


def daemon_backfill_command(days: list[str]) -> list[str]:
    """Queue one `ingest_daily` run per day for the running daemon (`make ui`) instead of running here."""
    return [sys.executable, "-m", "dagster", "job", "backfill", "-m", DEFINITIONS_MODULE, "-j", "ingest_daily",
            "--from", days[0], "--to", days[-1], "--noprompt"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m assets.backfill", description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="start", required=True)
    p.add_argument("--to", dest="end", required=True)
    p.add_argument("--workspace", required=True)
    p.add_argument("--multiprocess", action="store_true", help="one process per step instead of in-process")
    p.add_argument("--daemon", action="store_true", help="queue one run per day for the running daemon")
    args = p.parse_args(argv)
    days = days_in_range(args.start, args.end)
    ensure_dagster_home(dagster_home_for())
    if args.daemon:
        return subprocess.call(daemon_backfill_command(days))
    result = backfill(days, args.workspace, in_process=not args.multiprocess,
                      emit=lambda ev: print(event_line(ev), flush=True))
    print(result_line(result), flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
