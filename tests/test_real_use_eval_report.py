"""Issue 12, item 2: every JSON file the project writes is valid JSON (null for a missing number), and
`tracemill eval report` reads a checkpoint's report, also through the corpus's LATEST file."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.demo.agents import policy_for
from pipeline.evaluate.compare import build_report
from pipeline.evaluate.online import online_eval
from pipeline.evaluate.publish import log_report
from pipeline.jsonio import dumps_json
from pipeline.train.checkpoints import promote


def _strict(text: str) -> object:
    """Parse as a strict reader would (JavaScript, Go, jq): NaN / Infinity are not JSON."""
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def tm(*args: str, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          env={"TRACEMILL_HOME": str(home), "PATH": "/usr/bin:/bin", "COLUMNS": "200"})


class Tracker:
    """Publishing also logs to MLflow; this test is about the files, so the tracker only records."""

    def log_metrics_to_run(self, run_id: str, metrics: dict, step: int | None = None) -> None:
        self.metrics = metrics

    def log_artifact(self, local_path: Path, artifact_path: str | None = None, run_id: str | None = None) -> None:
        self.artifacts = [*getattr(self, "artifacts", []), local_path]


def answers_at_once(task: object) -> object:
    """An untrained model's habit: a final answer without calling a tool (no calls: no error rate)."""
    return lambda messages: {"role": "assistant", "content": "42"}


@pytest.fixture(scope="module")
def nan_report() -> dict:
    """A real report (real rollouts, real comparison) whose base tool_call_error_rate is NaN."""
    current = online_eval(None, seed=1, n_tasks=4, agent="careful",
                          policy_factory=lambda task: policy_for("careful", task))
    base = online_eval(None, seed=1, n_tasks=4, agent="base", policy_factory=answers_at_once)
    assert math.isnan(base["tool_call_error_rate"])
    return build_report(current, base=base, n_boot=50)


def test_dumps_json_writes_null_for_missing_numbers():
    value = {"a": math.nan, "b": [math.inf, -math.inf, 1.5, (2, math.nan)], "c": "NaN"}
    assert _strict(dumps_json(value)) == {"a": None, "b": [None, None, 1.5, [2, None]], "c": "NaN"}
    assert dumps_json({"x": [1, 2]}) == json.dumps({"x": [1, 2]})  # same spacing as json.dumps


def test_published_report_with_nan_is_read_back_by_the_cli(nan_report, tmp_path):
    checkpoints = tmp_path / "checkpoints" / "sft"
    ck = checkpoints / "run-1"
    log_report(Tracker(), "run-1", nan_report, ck / "eval")
    data = _strict((ck / "eval" / "report.json").read_text())
    assert data["tables"]["base"]["all"]["tool_call_error_rate"] is None

    shown = tm("eval", "report", str(ck), home=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "tool_call_error_rate" in shown.stdout and "verdict vs" in shown.stdout
    as_json = tm("eval", "report", str(ck), "--json", home=tmp_path)
    assert _strict(as_json.stdout)["tables"]["base"]["all"]["tool_call_error_rate"] is None

    promote(checkpoints, ck)  # the gate passed: LATEST names the checkpoint folder
    for target in (checkpoints / "LATEST", checkpoints):
        via = tm("eval", "report", str(target), "--json", home=tmp_path)
        assert via.returncode == 0, via.stderr
        assert _strict(via.stdout) == _strict(as_json.stdout)


def test_latest_naming_a_missing_checkpoint_says_so(tmp_path):
    checkpoints = tmp_path / "checkpoints" / "sft"
    checkpoints.mkdir(parents=True)
    promote(checkpoints, checkpoints / "gone")
    out = tm("eval", "report", str(checkpoints / "LATEST"), home=tmp_path)
    assert out.returncode == 1 and "names" in out.stderr and "gone" in out.stderr and "Traceback" not in out.stderr


def test_a_report_written_with_nan_by_an_older_version_still_reads(nan_report, tmp_path):
    ck = tmp_path / "ck"
    (ck / "eval").mkdir(parents=True)
    (ck / "eval" / "report.json").write_text(json.dumps(nan_report, indent=1, default=str))  # the old writer
    out = tm("eval", "report", str(ck), "--json", home=tmp_path)
    assert out.returncode == 0, out.stderr
    assert _strict(out.stdout)["tables"]["base"]["all"]["tool_call_error_rate"] is None
