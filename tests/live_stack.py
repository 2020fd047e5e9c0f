"""The live stack the live tests share: the `make ui` launcher (`python -m assets.dev.ui`) started on free
loopback ports, its Dagster GraphQL API, and every process it started (for the test that stops it)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from pipeline.demo.agents import DemoStats

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCATION = {"repositoryLocationName": "assets.definitions", "repositoryName": "__repository__"}
TICKS = """query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { __typename ... on Sensor {
  minIntervalSeconds sensorState { status ticks(limit: 50) { status timestamp runKeys skipReason } } } } }"""
RUNS = """query($f: RunsFilter) { runsOrError(filter: $f) { ... on Runs { results {
  runId status tags { key value } } } } }"""
MATERIALIZATIONS = """query($k: AssetKeyInput!) { assetOrError(assetKey: $k) { ... on Asset {
  assetMaterializations(limit: 100) { partition runId timestamp } } } }"""
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}
LAUNCH = """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on Error { message } } }"""
LATEST = """query($k: AssetKeyInput!) { assetOrError(assetKey: $k) { ... on Asset {
  assetMaterializations(limit: 1) { runId metadataEntries { label __typename
    ... on TextMetadataEntry { text } ... on MarkdownMetadataEntry { mdStr } } } } } }"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class Live:
    """The running launcher, its URLs, and every descendant process seen (none may outlive the stop)."""

    proc: subprocess.Popen
    home: Path
    dagster_url: str
    mlflow_url: str
    stats: DemoStats
    lines: list[str] = field(default_factory=list)
    seen: dict[int, float] = field(default_factory=dict)  # pid → create time, every descendant seen

    def gql(self, query: str, **variables: Any) -> dict:
        resp = httpx.post(f"{self.dagster_url}/graphql", json={"query": query, "variables": variables}, timeout=20)
        resp.raise_for_status()
        return resp.json()["data"]

    def snapshot(self) -> None:
        try:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self.seen.setdefault(child.pid, child.create_time())
        except psutil.NoSuchProcess:
            pass

    def stop(self, timeout: float = 45) -> float:
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.snapshot()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return time.monotonic() - t0

    def ticks(self) -> list[dict]:
        sensor = self.gql(TICKS, s={**LOCATION, "sensorName": "late_outcomes"})["sensorOrError"]
        return sensor.get("sensorState", {}).get("ticks", []) if sensor["__typename"] == "Sensor" else []

    def sensor_runs(self, sensor: str = "late_outcomes") -> list[dict]:
        runs = self.gql(RUNS, f={"tags": [{"key": "dagster/sensor_name", "value": sensor}]})
        return runs["runsOrError"].get("results", [])

    def latest_materialization(self, asset: str) -> float:
        mats = self.gql(MATERIALIZATIONS, k={"path": [asset]})["assetOrError"].get("assetMaterializations", [])
        return max((float(m["timestamp"]) for m in mats), default=0.0)

    def caught_up(self) -> bool:
        """No run queued or running, and the corpus was snapshotted after the latest join: nothing is
        left for the automation to request."""
        runs = self.gql(RUNS, f=None)["runsOrError"].get("results", [])
        return (all(r["status"] in FINISHED for r in runs)
                and self.latest_materialization("corpus_sft") > self.latest_materialization("joined_trajectories"))

    def launch(self, job: str) -> str:
        """A run of `job` handed to the daemon, as UI → Jobs → <job> → Materialize all does it."""
        params = {"selector": {**LOCATION, "jobName": job}, "runConfigData": {}}
        launched = self.gql(LAUNCH, p=params)["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        return launched["run"]["runId"]

    def wait_run(self, run_id: str, timeout: float) -> str:
        """The run's final status, once it has one."""
        def finished() -> str | None:
            self.snapshot()
            runs = self.gql(RUNS, f={"runIds": [run_id]})["runsOrError"].get("results", [])
            return runs[0]["status"] if runs and runs[0]["status"] in FINISHED else None

        return wait_for(finished, timeout, f"run {run_id}", every=2)

    def latest_metadata(self, asset: str) -> tuple[str, dict[str, dict]]:
        """(run id, {label: metadata entry}) of the asset's latest materialization."""
        mats = self.gql(LATEST, k={"path": [asset]})["assetOrError"].get("assetMaterializations", [])
        assert mats, f"{asset} was never materialized"
        return mats[0]["runId"], {e["label"]: e for e in mats[0]["metadataEntries"]}


def start_live(home: Path, env: dict[str, str], stats: DemoStats) -> Live:
    """The launcher on free ports, once it says ready; its output collected in `Live.lines`."""
    ports = free_port(), free_port()
    cmd = [sys.executable, "-m", "assets.dev.ui", "--home", str(home),
           "--dagster-port", str(ports[0]), "--mlflow-port", str(ports[1])]
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    live = Live(proc, home, f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}", stats)
    threading.Thread(target=lambda: live.lines.extend(proc.stdout), daemon=True).start()
    try:
        wait_for(lambda: any("tracemill ui ready" in ln for ln in live.lines) or proc.poll() is not None, 120,
                 "the launcher")
        assert proc.poll() is None, "launcher exited:\n" + "".join(live.lines)
        live.snapshot()
        assert live.gql("mutation { setNuxSeen }")["setNuxSeen"]  # no first-visit dialog over the browser tests
    except BaseException:
        live.stop()
        raise
    return live
