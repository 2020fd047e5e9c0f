"""Backfill the capture stage (raw → outcomes → joined) for a range of days through Dagster's own CLI.

Why a subprocess and not `dagster` imports: `pipeline/` is plain Python that runs without Dagster,
and a run started by `dagster asset materialize` with `$DAGSTER_HOME` set is recorded in the same
event log the UI and the daemon read, so a backfilled day shows as materialized there and the
late-outcome sensor treats it like any other day.

Two runs, not one: `dagster asset materialize --partition-range` needs
`BackfillPolicy.single_run()` on every selected asset, and `outcomes` is one unpartitioned table
("every outcome ever landed") without one. So `outcomes` is refreshed first, then
`raw_trajectories,joined_trajectories` run for the whole range in one run (each asset loops over
`context.partition_keys`). Both use the in-process executor by default: the capture steps are light
and sequential, and a process per step costs ~3 s each on 2 cores.

The daemon path (`dagster job backfill -j ingest_daily`, one run per day, executed by `make ui`'s
daemon) is offered as `daemon_backfill_command` for ranges too big for one process.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import yaml

from pipeline import storage
from pipeline.capture.workspace import Workspace, WorkspaceNotFound, home_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS_MODULE = "assets.definitions"
PARTITIONED = ("raw_trajectories", "joined_trajectories")
IN_PROCESS = '{"execution": {"config": {"in_process": {}}}}'
_LINE = re.compile(r" - dagster - (?P<level>[A-Z]+) - (?P<job>\S+) - (?P<run_id>[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12})"
                   r" - (?P<rest>.*)$")
_EVENT = re.compile(r"^[A-Z][A-Z_]+$")


@dataclass
class DagsterEvent:
    """One line of Dagster's console log: a structured event (STEP_SUCCESS, …) or a user log (LOG)."""

    run_id: str
    event: str
    step: str | None
    message: str
    level: str = "DEBUG"


def parse_line(line: str) -> DagsterEvent | None:
    """`… - dagster - DEBUG - JOB - RUN_ID - PID - STEP - EVENT - message` (PID and STEP optional)."""
    m = _LINE.search(line.rstrip("\n"))
    if not m:
        return None
    parts = m["rest"].split(" - ")
    if parts and parts[0].isdigit():
        parts = parts[1:]
    if parts and _EVENT.match(parts[0]):
        return DagsterEvent(m["run_id"], parts[0], None, " - ".join(parts[1:]), m["level"])
    if len(parts) >= 2 and _EVENT.match(parts[1]):
        return DagsterEvent(m["run_id"], parts[1], parts[0], " - ".join(parts[2:]), m["level"])
    step = parts[0] if len(parts) > 1 else None
    return DagsterEvent(m["run_id"], "LOG", step, " - ".join(parts[1:] if step else parts), m["level"])


def days_in_range(start: str, end: str) -> list[str]:
    """Every ISO day from `start` to `end` inclusive; a clear error for bad or reversed dates."""
    try:
        a, b = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError as exc:
        raise ValueError(f"dates must be YYYY-MM-DD: {exc}") from None
    if b < a:
        raise ValueError(f"--to {end} is before --from {start}")
    return [(a + timedelta(days=i)).isoformat() for i in range((b - a).days + 1)]


def ensure_dagster_home(dagster_home: Path) -> Path:
    """A Dagster instance needs `$DAGSTER_HOME/dagster.yaml`: copy the repo's (pools, run limits)."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    target = dagster_home / "dagster.yaml"
    if not target.exists():
        source = REPO_ROOT / "dagster.yaml"
        if source.exists():
            shutil.copy(source, target)
        else:
            target.write_text("telemetry:\n  enabled: false\n")
    return dagster_home


def dagster_command(*args: str) -> list[str]:
    """`python -m dagster …` with this interpreter, so the CLI and the code share one environment."""
    return [sys.executable, "-m", "dagster", *args]


@dataclass
class BackfillPlan:
    start: str
    end: str
    days: list[str]
    workspace: str
    home: Path
    dagster_home: Path
    env: dict[str, str]
    commands: list[list[str]]
    config_override: str | None = None  # set when --workspace differs from tracemill.yaml's


def _config_for_workspace(workspace: str, dagster_home: Path) -> tuple[str, str | None]:
    """The workspace to backfill, and a config file override when it differs from tracemill.yaml's
    (the Definitions read the workspace from the config, so `--workspace` is passed that way)."""
    from pipeline.config import load_config

    cfg = load_config()
    if not workspace or workspace == cfg.workspace:
        return cfg.workspace, None
    path = dagster_home / "backfill-configs" / f"{workspace}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg.model_copy(update={"workspace": workspace}).model_dump(mode="json")))
    return workspace, str(path)


def plan_backfill(start: str, end: str, *, workspace: str | None = None, home: str | os.PathLike | None = None,
                  dagster_home: str | os.PathLike | None = None, in_process: bool = True) -> BackfillPlan:
    """The commands and environment of a backfill, without running anything."""
    days = days_in_range(start, end)
    hd = home_dir(home)
    dh = ensure_dagster_home(Path(dagster_home or os.environ.get("DAGSTER_HOME") or hd / "dagster").resolve())
    name, config = _config_for_workspace(workspace or "", dh)
    env = {**os.environ, "TRACEMILL_HOME": str(hd), "DAGSTER_HOME": str(dh), "DAGSTER_DISABLE_TELEMETRY": "1"}
    if config:
        env["TRACEMILL_CONFIG"] = config
    execution = ["--config-json", IN_PROCESS] if in_process else []
    base = ["asset", "materialize", "-m", DEFINITIONS_MODULE]
    commands = [
        dagster_command(*base, "--select", "outcomes", *execution),
        dagster_command(*base, "--select", ",".join(PARTITIONED), "--partition-range", f"{days[0]}...{days[-1]}",
                        *execution),
    ]
    return BackfillPlan(start, end, days, name, hd, dh, env, commands, config)


def daemon_backfill_command(start: str, end: str, workspace_yaml: Path = REPO_ROOT / "workspace.yaml") -> list[str]:
    """Queue one `ingest_daily` run per day for the running daemon (`make ui`) instead of running here."""
    days = days_in_range(start, end)
    return dagster_command("job", "backfill", "-w", str(workspace_yaml), "-j", "ingest_daily",
                           "--from", days[0], "--to", days[-1], "--noprompt")


@dataclass
class BackfillResult:
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


def run_backfill(plan: BackfillPlan, on_event: Callable[[DagsterEvent], None] | None = None) -> BackfillResult:
    """Run the plan's commands in order, streaming Dagster's events to `on_event`; stop at the first
    failing command (joining against a stale outcome table would be silently wrong)."""
    t0 = time.monotonic()
    result = BackfillResult(plan.days)
    for cmd in plan.commands:
        proc = subprocess.Popen(cmd, env=plan.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                cwd=os.getcwd())
        assert proc.stdout is not None
        for line in proc.stdout:
            result.output_tail = [*result.output_tail[-39:], line.rstrip("\n")]
            ev = parse_line(line)
            if ev is None:
                continue
            _record(result, ev)
            if on_event:
                on_event(ev)
        result.returncode = proc.wait()
        if result.returncode != 0:
            break
    result.seconds = round(time.monotonic() - t0, 2)
    _summarise_lake(plan, result)
    return result


def _record(result: BackfillResult, ev: DagsterEvent) -> None:
    if ev.event == "RUN_START" and ev.run_id not in result.run_ids:
        result.run_ids.append(ev.run_id)
    elif ev.event == "ASSET_MATERIALIZATION" and ev.step:
        result.materializations[ev.step] += 1
    elif ev.event == "ASSET_CHECK_EVALUATION" and ev.step:
        result.checks[ev.step] = ev.message
    elif ev.event in {"STEP_FAILURE", "RUN_FAILURE"}:
        result.failures.append(f"{ev.step or 'run'}: {ev.message}")


def _summarise_lake(plan: BackfillPlan, result: BackfillResult) -> None:
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
