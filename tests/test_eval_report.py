"""Comparison and reports: bootstrap CIs on hand-built cases, the promotion gate, Markdown, rich, PNGs."""

from __future__ import annotations

import math

import pytest

from pipeline.demo.agents import policy_for
from pipeline.evaluate.compare import bootstrap_ci, build_report, compare, gate
from pipeline.evaluate.online import online_eval
from pipeline.evaluate.plots import plots
from pipeline.evaluate.publish import log_report
from pipeline.evaluate.render import markdown_report, rich_table


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
    assert [p.name for p in paths] == ["slices.png", "deltas.png", "loss_curve.png", "rewards.png"]
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_log_report_sends_metrics_and_artifacts(report, tmp_path):
    class FakeTracker:
        def __init__(self):
            self.metrics, self.artifacts = {}, []

        def log_metrics_to_run(self, run_id, metrics, step=None):
            self.metrics[run_id] = metrics

        def log_artifact(self, local_path, artifact_path=None, run_id=None):
            self.artifacts.append((local_path.name, artifact_path, run_id))

    tracker = FakeTracker()
    files = log_report(tracker, "run-1", report, tmp_path / "out")
    assert tracker.metrics["run-1"]["online_success_rate"] == 1.0
    assert tracker.artifacts == [("report.md", "online_eval", "run-1"), ("report.json", "online_eval", "run-1"),
                                 ("slices.png", "plots/online", "run-1"), ("deltas.png", "plots/online", "run-1"),
                                 ("loss_curve.png", "plots/loss", "run-1"), ("rewards.png", "plots/online", "run-1")]
    assert {f.name for f in files} >= {"report.md", "report.json", "slices.png"}


def test_results_on_different_tasks_are_not_compared():
    a = online_eval(None, seed=1, n_tasks=3, policy_factory=lambda t: policy_for("careful", t))
    b = online_eval(None, seed=2, n_tasks=3, policy_factory=lambda t: policy_for("careful", t))
    with pytest.raises(ValueError, match="different tasks"):
        build_report(a, base=b)


def test_mlflow_round_trip(report, tmp_path):
    """Loss curve read back from a real (sqlite) MLflow run; metrics and artifacts land on that run."""
    from pipeline.evaluate.compare import loss_curve_from_mlflow
    from pipeline.tracking import MlflowTracker

    tracker = MlflowTracker(home=tmp_path, experiment="eval-report-test")
    with tracker.start_run("train") as run:
        for step, loss in [(0, 3.0), (5, 2.0), (10, 1.5)]:
            tracker.log_metrics({"loss": loss}, step=step)
    assert loss_curve_from_mlflow(tracker, run.run_id) == [(0, 3.0), (5, 2.0), (10, 1.5)]
    log_report(tracker, run.run_id, report, tmp_path / "out")
    logged = tracker.get_run(run.run_id).data.metrics
    assert logged["online_success_rate"] == 1.0
    assert "online_n_tasks" not in logged and tracker.get_run(run.run_id).data.tags["online_n_tasks"] == "20"
    names = {a.path for a in tracker.client.list_artifacts(run.run_id, "online_eval")}
    assert names == {"online_eval/report.md", "online_eval/report.json"}
    plots_logged = {a.path for d in ("online", "loss") for a in tracker.client.list_artifacts(run.run_id, f"plots/{d}")}
    assert plots_logged == {"plots/online/slices.png", "plots/online/deltas.png", "plots/online/rewards.png",
                            "plots/loss/loss_curve.png"}


def _hand_built_report(with_online_models: bool = True) -> dict:
    """Two offline slices for checkpoint, base and previous, with per-example values (so intervals) for
    final_answer_accuracy only; the online side is a bare summary without per-task rows."""
    def rows(p: float, loss: float) -> dict:
        return {"eval": {"loss": loss, "perplexity": math.exp(loss), "final_answer_accuracy": p,
                         "tool_call_accuracy": p / 2, "n_rows": 20},
                "hard": {"loss": loss + 1, "perplexity": math.exp(loss + 1), "final_answer_accuracy": p / 2,
                         "n_rows": 10}}

    def answers(k: int, n: int) -> list[float]:
        return [1.0] * k + [0.0] * (n - k)

    offline = {"checkpoint": rows(0.9, 0.5), "base": rows(0.1, 4.0), "previous": rows(0.85, 0.6)}
    per_example = {m: {"eval": {"final_answer_accuracy": answers(k, 20)},
                       "hard": {"final_answer_accuracy": answers(k // 2, 10)}}
                   for m, k in (("checkpoint", 18), ("base", 2), ("previous", 17))}
    online = {"success_rate": 0.8, "n_tasks": 10}
    extra = {"base": {"success_rate": 0.2, "n_tasks": 10}, "previous": {"success_rate": 0.7, "n_tasks": 10}}
    return build_report(online, **(extra if with_online_models else {}), offline=offline,
                        offline_per_example=per_example, n_boot=300)


def test_offline_slice_plot_is_a_listed_png(tmp_path):
    from PIL import Image

    report = _hand_built_report()
    off = report["offline"]
    assert list(off["tables"]["checkpoint"]) == ["eval", "hard"] and off["primary"] == "final_answer_accuracy"
    assert off["metrics"] == ["loss", "perplexity", "tool_call_accuracy", "final_answer_accuracy"]
    delta, lo, hi = off["comparisons"]["base"]["eval"]["ci"]["final_answer_accuracy"]
    assert delta == pytest.approx(0.8) and lo > 0 and off["comparisons"]["base"]["eval"]["verdict"] == "better"
    assert "loss" not in off["comparisons"]["previous"]["hard"]["ci"]  # no per-example losses: no interval

    paths = plots(report, tmp_path / "plots")
    assert [p.name for p in paths] == ["slices.png", "offline_slices.png", "offline_deltas.png"]
    png = tmp_path / "plots" / "offline_slices.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as img:
        img.verify()
    with Image.open(png) as img:
        assert img.format == "PNG" and img.size[0] >= 800 and img.size[1] >= 400  # 4 metrics: a 3 × 2 grid

    class Tracker:  # log_report: the same PNG goes to MLflow with report.md / report.json
        def log_metrics_to_run(self, run_id, metrics, step=None):
            pass

        def log_artifact(self, local_path, artifact_path=None, run_id=None):
            self.logged = {**getattr(self, "logged", {}), local_path.name: artifact_path}

    tracker = Tracker()
    files = log_report(tracker, "run-1", report, tmp_path / "out")
    assert "offline_slices.png" in {f.name for f in files} and tracker.logged["offline_slices.png"] == "plots/offline"
    assert tracker.logged["offline_deltas.png"] == "plots/offline" and tracker.logged["slices.png"] == "plots/online"
    assert (tmp_path / "out" / "report.json").read_text().count('"offline"') == 1

    # online eval off (stage_eval): the offline section alone still draws its plot
    alone = plots({"offline": report["offline"]}, tmp_path / "alone")
    assert [p.name for p in alone] == ["offline_slices.png", "offline_deltas.png"]


def test_markdown_says_plainly_whether_better_per_slice_online_and_offline():
    md = markdown_report(_hand_built_report())
    assert "### Is the new checkpoint better?" in md
    assert "| eval | slice | metric | vs base | vs previous |" in md
    # online: a bare summary has no per-task values, so it gives the delta without claiming a verdict
    assert "| online | all | success_rate | not tested, no per-example values (+0.600) |" in md
    base_cell = [line for line in md.splitlines() if line.startswith("| offline | eval | final_answer_accuracy")][0]
    assert base_cell.count("**better**") == 1 and "no significant difference" in base_cell  # vs base, vs previous
    assert "| offline | hard | final_answer_accuracy |" in md
    assert "### Offline metrics per slice vs base and previous" in md and "| hard | loss | 1.500 |" in md
    lonely = markdown_report(build_report({"success_rate": 0.5}, offline={"checkpoint": {"eval": {"loss": 1.0}}}))
    assert "nothing to compare with" in lonely


def test_online_verdict_rows_cover_every_slice_against_base_and_previous(report):
    md = markdown_report(report)
    for name in report["tables"]["checkpoint"]:
        row = next(line for line in md.splitlines() if line.startswith(f"| online | {name} | success_rate |"))
        assert row.count("|") == 6 and "–" not in row  # a verdict vs base and vs previous for each slice
    assert "**better** (" in md
