"""Comparison and reports: bootstrap CIs on hand-built cases, the promotion gate, Markdown, rich, PNGs."""

from __future__ import annotations

import math

import pytest

from pipeline.demo_world import policy_for
from pipeline.eval_report import (
    bootstrap_ci,
    build_report,
    compare,
    gate,
    log_report,
    markdown_report,
    plots,
    rich_table,
)
from pipeline.online_eval import online_eval


def test_bootstrap_ci_identical_and_clearly_better():
    same = [1, 0, 1, 1, 0, 0, 1, 0]
    assert bootstrap_ci(same, same) == (0.0, 0.0, 0.0)
    noisy_a, noisy_b = [1, 0, 1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 0, 1, 0, 1]
    delta, lo, hi = bootstrap_ci(noisy_a, noisy_b)
    assert delta == 0.0 and lo < 0 < hi
    delta, lo, hi = bootstrap_ci([1] * 18 + [0] * 2, [0] * 16 + [1] * 4)
    assert delta == pytest.approx(0.7) and 0 < lo <= delta <= hi
    assert bootstrap_ci([1, 0], [1, 0], seed=1) == bootstrap_ci([1, 0], [1, 0], seed=1)
    assert all(math.isnan(x) for x in bootstrap_ci([math.nan], [1.0]))
    with pytest.raises(ValueError):
        bootstrap_ci([1, 0], [1])


def test_compare_verdicts():
    good, bad = [1.0] * 15 + [0.0] * 5, [0.0] * 15 + [1.0] * 5
    cur, base = {"success_rate": 0.75, "loss": 1.0}, {"success_rate": 0.25, "loss": 2.0}
    better = compare(cur, base, good, bad)
    assert better["verdict"] == "better" and better["deltas"] == {"success_rate": 0.5, "loss": -1.0}
    assert better["ci"]["success_rate"][1] > 0
    assert compare(base, cur, bad, good)["verdict"] == "worse"
    assert compare(cur, cur, good, good)["verdict"] == "no significant difference"
    assert compare(cur, base)["verdict"] == "no significant difference"  # no per-example values: no claim
    # lower is better for an error rate: a significant rise is "worse"
    errs = compare({"invalid_output_rate": 0.8}, {"invalid_output_rate": 0.1}, {"invalid_output_rate": good},
                   {"invalid_output_rate": bad}, primary="invalid_output_rate")
    assert errs["verdict"] == "worse"


def test_gate_fails_on_a_worse_checkpoint_only():
    prev = {"success_rate": 0.8, "loss": 1.0}
    ok, msg = gate({"success_rate": 0.78}, prev, "success_rate", margin=0.05)
    assert ok and "passed" in msg
    ok, msg = gate({"success_rate": 0.6}, prev, "success_rate", margin=0.05)
    assert not ok and "FAILED" in msg and "0.6000" in msg
    assert gate({"loss": 1.5}, prev, "loss", 0.1, higher_is_better=False)[0] is False
    assert gate({"loss": 0.5}, prev, "loss", 0.1, higher_is_better=False)[0] is True
    assert gate({"success_rate": 0.1}, None, "success_rate", 0.0)[0] is True  # first checkpoint
    assert gate({"success_rate": math.nan}, prev, "success_rate", 0.0)[0] is False


@pytest.fixture(scope="module")
def report():
    """Scripted agents stand in for checkpoints: careful (current), confused (base), hasty (previous)."""
    def run(agent: str) -> dict:
        return online_eval(None, seed=1, n_tasks=20, agent=agent,
                           policy_factory=lambda task: policy_for(agent, task))

    current = run("careful") | {"loss": 0.4}  # offline metrics merged in by the caller
    return build_report(current, base=run("confused"), previous=run("hasty"),
                        loss_curve=[(0, 3.1), (10, 2.0), (20, 1.2), (30, 0.9)], n_boot=500)


def test_report_tables_deltas_and_verdict(report):
    assert report["verdict_against"] == "previous" and report["verdict"] in ("better", "no significant difference")
    vs_base = report["comparisons"]["base"]["all"]
    assert vs_base["verdict"] == "better" and vs_base["ci"]["success_rate"][1] > 0
    assert set(report["tables"]["checkpoint"]) >= {"all", "usd (2 tools)", "converted (3 tools)"}
    assert report["tables"]["checkpoint"]["all"]["loss"] == 0.4
    md = markdown_report(report)
    delta = vs_base["deltas"]["success_rate"]
    _, lo, hi = vs_base["ci"]["success_rate"]
    assert f"{delta:+.3f} [{lo:+.3f}, {hi:+.3f}]" in md
    assert "Δ vs base" in md and "Δ vs previous" in md and "### converted (3 tools)" in md
    assert "| loss |" not in md  # only the report's metrics are tabulated


def test_rich_table_renders(report):
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(rich_table(report))
    text = console.export_text()
    assert "success_rate" in text and "Δ vs previous" in text


def test_plots_are_valid_pngs(report, tmp_path):
    paths = plots(report, tmp_path / "plots")
    assert [p.name for p in paths] == ["slices.png", "loss_curve.png", "rewards.png"]
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_log_report_sends_metrics_and_artifacts(report, tmp_path):
    class FakeTracker:
        def __init__(self):
            self.metrics, self.artifacts = {}, []

        def log_metrics_to_run(self, run_id, metrics, step=None):
            self.metrics[run_id] = metrics

        def log_artifacts(self, local_dir, artifact_path=None, run_id=None):
            self.artifacts.append((str(local_dir), artifact_path, run_id))

    tracker = FakeTracker()
    files = log_report(tracker, "run-1", report, tmp_path / "out")
    assert tracker.metrics["run-1"]["online_success_rate"] == 1.0
    assert tracker.artifacts == [(str(tmp_path / "out"), "online_eval", "run-1")]
    assert {f.name for f in files} >= {"report.md", "report.json", "slices.png"}


def test_results_on_different_tasks_are_not_compared():
    a = online_eval(None, seed=1, n_tasks=3, policy_factory=lambda t: policy_for("careful", t))
    b = online_eval(None, seed=2, n_tasks=3, policy_factory=lambda t: policy_for("careful", t))
    with pytest.raises(ValueError, match="different tasks"):
        build_report(a, base=b)


def test_mlflow_round_trip(report, tmp_path):
    """Loss curve read back from a real (sqlite) MLflow run; metrics and artifacts land on that run."""
    from pipeline.eval_report import loss_curve_from_mlflow
    from pipeline.tracking import MlflowTracker

    tracker = MlflowTracker(home=tmp_path, experiment="eval-report-test")
    with tracker.start_run("train") as run:
        for step, loss in [(0, 3.0), (5, 2.0), (10, 1.5)]:
            tracker.log_metrics({"loss": loss}, step=step)
    assert loss_curve_from_mlflow(tracker, run.run_id) == [(0, 3.0), (5, 2.0), (10, 1.5)]
    log_report(tracker, run.run_id, report, tmp_path / "out")
    logged = tracker.get_run(run.run_id).data.metrics
    assert logged["online_success_rate"] == 1.0
    names = {a.path for a in tracker.client.list_artifacts(run.run_id, "online_eval")}
    assert {"online_eval/report.md", "online_eval/slices.png"} <= names
