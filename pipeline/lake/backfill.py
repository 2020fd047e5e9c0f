"""Backfill the capture stage (raw → outcomes → joined) for a range of days: the plan, the typed
events and result, and the lake summary. Plain Python; the Dagster side is `assets/backfill.py`.

Why a subprocess (`python -m assets.backfill`) and not Dagster imports: `pipeline/` is plain Python
that runs without Dagster, and must not import `assets/` (it sits above). The child runs the backfill
through Dagster's Python API (`execute_job` on the `$DAGSTER_HOME` instance, so the runs are
recorded in the same event log the UI and the daemon read, and the late-outcome sensor treats a
backfilled day like any other) and writes one JSON object per line on stdout: an `event` per
Dagster event-log record (for the progress lines), then one `result`. Those are the dataclasses
below, so both sides share one typed contract instead of a regex over Dagster's console log.

The workspace travels as run config on the `tracemill` resource (visible on the run in the UI),
not as a rewritten tracemill.yaml: see `assets/backfill.py` for why two runs and not one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path

import orjson

from pipeline import storage
from pipeline.capture.workspace import Workspace, WorkspaceNotFound, home_dir
from pipeline.config import load_config

RUNNER_MODULE = "assets.backfill"  # the Dagster side, run as `python -m assets.backfill`
FAILED = frozenset({"STEP_FAILURE", "RUN_FAILURE"})


@dataclass
class BackfillEvent:
    """One record of a run's Dagster event log: a structured event (STEP_START, ASSET_MATERIALIZATION,
    …) or a user log line (event "LOG", e.g. `2026-11-17: 10 valid, 0 quarantined`)."""

    run_id: str
    event: str
    step: str | None
    message: str
    level: str = "DEBUG"


@dataclass
class BackfillResult:
    """What a backfill did: from the Dagster runs (filled by `record`) and from the lake (`summarise_lake`)."""

    days: list[str]
    run_ids: list[str] = field(default_factory=list)
    materializations: Counter[str] = field(default_factory=Counter)  # asset → partitions materialized
    checks: dict[str, str] = field(default_factory=dict)  # check step → last message
    failures: list[str] = field(default_factory=list)
    returncode: int = 0
    seconds: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)  # day → joined rows in the lake
    landed_days: list[str] = field(default_factory=list)
    output_tail: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.failures

    def record(self, ev: BackfillEvent) -> None:
        """Fold one event into the run-side fields (runs, materializations per asset, checks, failures)."""
        if ev.event == "RUN_START" and ev.run_id not in self.run_ids:
            self.run_ids.append(ev.run_id)
        elif ev.event == "ASSET_MATERIALIZATION" and ev.step:
            self.materializations[ev.step] += 1
        elif ev.event == "ASSET_CHECK_EVALUATION" and ev.step:
            self.checks[ev.step] = ev.message
        elif ev.event in FAILED:
            self.failures.append(f"{ev.step or 'run'}: {ev.message}")


def event_line(ev: BackfillEvent) -> str:
    """The wire form of an event: `{"event": {...}}` on one line."""
    return orjson.dumps({"event": asdict(ev)}).decode()


def result_line(result: BackfillResult) -> str:
    """The wire form of the run-side result: `{"result": {...}}` on one line, written last."""
    return orjson.dumps({"result": {"run_ids": result.run_ids, "materializations": dict(result.materializations),
                                    "checks": result.checks, "failures": result.failures}}).decode()


def parse_line(line: str) -> BackfillEvent | dict | None:
    """An event, the result's fields (a dict), or None for any other output (warnings, a traceback)."""
    if not line.startswith("{"):
        return None
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if isinstance(obj, dict) and isinstance(obj.get("event"), dict):
        return BackfillEvent(**obj["event"])
    if isinstance(obj, dict) and isinstance(obj.get("result"), dict):
        return obj["result"]
    return None


def days_in_range(start: str, end: str) -> list[str]:
    """Every ISO day from `start` to `end` inclusive; a clear error for bad or reversed dates."""
    try:
        a, b = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError as exc:
        raise ValueError(f"dates must be YYYY-MM-DD: {exc}") from None
    if b < a:
        raise ValueError(f"--to {end} is before --from {start}")
    return [(a + timedelta(days=i)).isoformat() for i in range((b - a).days + 1)]


@dataclass
class BackfillPlan:
    start: str
    end: str
    days: list[str]
    workspace: str
    home: Path
    dagster_home: Path
    env: dict[str, str]
    command: list[str]
    overrides_workspace: bool = False  # --workspace differs from tracemill.yaml's (run config, not the default)


def plan_backfill(start: str, end: str, *, workspace: str | None = None, home: str | os.PathLike | None = None,
                  dagster_home: str | os.PathLike | None = None, in_process: bool = True,
                  daemon: bool = False) -> BackfillPlan:
    """The command and environment of a backfill, without running anything or touching the disk."""
    days = days_in_range(start, end)
    hd = home_dir(home)
    dh = Path(dagster_home or os.environ.get("DAGSTER_HOME") or hd / "dagster").resolve()
    configured = load_config().workspace
    name = workspace or configured
    env = {**os.environ, "TRACEMILL_HOME": str(hd), "DAGSTER_HOME": str(dh), "DAGSTER_DISABLE_TELEMETRY": "1"}
    command = [sys.executable, "-m", RUNNER_MODULE, "--from", days[0], "--to", days[-1], "--workspace", name,
               *([] if in_process else ["--multiprocess"]), *(["--daemon"] if daemon else [])]
    return BackfillPlan(start, end, days, name, hd, dh, env, command, name != configured)


def run_backfill(plan: BackfillPlan, on_event: Callable[[BackfillEvent], None] | None = None) -> BackfillResult:
    """Run the plan's command, streaming its events to `on_event`; the child stops at the first failing
    run (joining against a stale outcome table would be silently wrong)."""
    t0 = time.monotonic()
    result = BackfillResult(plan.days)
    proc = subprocess.Popen(plan.command, env=plan.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=os.getcwd())
    assert proc.stdout is not None
    final: dict | None = None
    for line in proc.stdout:
        item = parse_line(line.rstrip("\n"))
        if isinstance(item, BackfillEvent):
            result.output_tail = [*result.output_tail[-39:], f"{item.step or 'run'} {item.event}: {item.message}"]
            if on_event:
                on_event(item)
        elif isinstance(item, dict):
            final = item
        else:
            result.output_tail = [*result.output_tail[-39:], line.rstrip("\n")]
    result.returncode = proc.wait()
    if final is None:  # the child died before its result line: a crash, not a run failure
        result.returncode = result.returncode or 1
    else:
        result.run_ids, result.checks, result.failures = final["run_ids"], final["checks"], final["failures"]
        result.materializations = Counter(final["materializations"])
    result.seconds = round(time.monotonic() - t0, 2)
    summarise_lake(plan, result)
    return result


def summarise_lake(plan: BackfillPlan, result: BackfillResult) -> None:
    """Which days had landed data, and how many joined rows each day has now."""
    import polars as pl

    try:
        ws = Workspace.open(plan.workspace, home=plan.home, create=False)
    except WorkspaceNotFound:
        return
    landed = set(ws.days("trajectory"))
    result.landed_days = [d for d in plan.days if d in landed]
    for day in plan.days:
        path = ws.joined_path(day)
        if path.exists():
            result.rows[day] = storage.scan_parquet(path).select(pl.len()).collect().item()
