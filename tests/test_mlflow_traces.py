"""Issue 16, item 2: online-eval rollouts as MLflow traces on the training run, counts kept out of the
charts, logged models named after their corpus. Real rollouts (scripted agents through `online_eval`) and
a real MLflow sqlite store under tmp_path."""

from __future__ import annotations

import pytest

from pipeline.demo.agents import policy_for
from pipeline.evaluate.online import online_eval
from pipeline.evaluate.rollout_traces import log_rollouts
from pipeline.tracking import MlflowTracker, is_count
from pipeline.train.checkpoints import register

CORPUS = "deeplake://local/sft@v3"


def _rollouts(agent: str, n: int, seed: int = 2) -> dict:
    return online_eval(None, seed=seed, n_tasks=n, agent=f"ckpt:{agent}", tag="sft@v3",
                       policy_factory=lambda task: policy_for(agent, task))


@pytest.fixture
def tracker(tmp_path):
    return MlflowTracker(home=tmp_path, experiment="traces-test")


def _run(tracker: MlflowTracker) -> str:
    with tracker.start_run("sft-v3-abc") as run:
        tracker.log_metrics({"loss": 1.0})
    return run.run_id


def test_rollouts_are_traces_on_the_run_with_reward_and_steps(tracker):
    report = _rollouts("careful", 4)
    run_id = _run(tracker)
    done = log_rollouts(tracker, report, run_id, CORPUS, limit=3)
    assert len(done.trace_ids) == 3 and done.skipped == 0  # capped at the limit, in task order

    found = tracker.client.search_traces(locations=[tracker.experiment_id], run_id=run_id)
    assert sorted(t.info.trace_id for t in found) == sorted(done.trace_ids)
    by_task = {t.info.tags["task_id"]: tracker.client.get_trace(t.info.trace_id) for t in found}
    assert set(by_task) == {r["task_id"] for r in report["tasks"][:3]}
    for r in report["tasks"][:3]:
        trace = by_task[r["task_id"]]
        info = trace.info
        assert info.trace_metadata["mlflow.sourceRun"] == run_id
        assert info.tags["corpus"] == CORPUS and info.tags["environment"] == report["environment"]
        assert info.tags["checkpoint"] == "ckpt:careful" and info.tags["tracemill.trajectory_id"] == r["trajectory_id"]
        scores = {a.name: a.value for a in info.assessments if a.feedback is not None}
        assert scores == {"reward": r["reward"], "success": r["success"]} == {"reward": 1.0, "success": True}
        assert [a.value for a in info.assessments if a.expectation is not None] == [r["task"]]  # the ground truth
        spans = trace.data.spans
        root = next(s for s in spans if s.parent_id is None)
        assert root.span_type == "AGENT" and root.outputs == r["final_answer"]
        assert [m["role"] for m in root.inputs["messages"]] == ["system", "user"]  # what the checkpoint was asked
        turns = [s for s in spans if s.span_type == "CHAT_MODEL"]
        tools = [s for s in spans if s.span_type == "TOOL"]
        assert len(turns) == r["steps"] and len(tools) == r["tool_calls"]
        assert [s.name for s in tools][:2] == ["lookup_price", "calculator"]
        assert tools[0].inputs["item"] == r["task"]["item"] and tools[0].outputs  # the call and what it returned
        assert turns[-1].outputs["content"] == r["messages"][-1]["content"]  # the answer, as written

    again = log_rollouts(tracker, report, run_id, CORPUS, limit=4)  # a re-materialized eval: no second copy
    assert again.skipped == 3 and len(again.trace_ids) == 1
    assert len(tracker.client.search_traces(locations=[tracker.experiment_id], run_id=run_id)) == 4


def test_failed_tool_calls_and_failed_tasks_read_as_such(tracker):
    report = _rollouts("confused", 6, seed=0)
    assert report["tool_call_error_rate"] > 0 and report["success_rate"] < 1
    run_id = _run(tracker)
    log_rollouts(tracker, report, run_id, CORPUS, limit=6, model_id=None)
    traces = {t.info.tags["task_id"]: tracker.client.get_trace(t.info.trace_id)
              for t in tracker.client.search_traces(locations=[tracker.experiment_id], run_id=run_id)}
    for r in report["tasks"]:
        spans = traces[r["task_id"]].data.spans
        failed = [s for s in spans if s.span_type == "TOOL" and s.status.status_code == "ERROR"]
        assert len(failed) == r["tool_errors"]
        assert {a.name: a.value for a in traces[r["task_id"]].info.assessments}["success"] is r["success"]


def test_nothing_logged_without_rollouts_or_with_limit_zero(tracker):
    run_id = _run(tracker)
    assert log_rollouts(tracker, None, run_id, CORPUS, limit=30).trace_ids == []
    assert log_rollouts(tracker, _rollouts("careful", 2), run_id, CORPUS, limit=0).trace_ids == []


def test_counts_go_to_tags_not_charts(tracker):
    assert [k for k in ("num_tokens", "eval_n_rows", "online_n_tasks", "online_errors", "train_rows", "total_flos",
                        "eval_n_loss_tokens", "epoch") if not is_count(k)] == []
    assert [k for k in ("loss", "eval_loss", "online_success_rate", "online_mean_steps", "tokens_per_second",
                        "completions/mean_length", "train_seconds") if is_count(k)] == []
    with tracker.start_run("r") as run:
        tracker.log_metrics({"loss": 2.0, "num_tokens": 512, "eval_n_rows": 7, "online_errors": 0.0}, step=3)
    got = tracker.get_run(run.run_id)
    assert got.data.metrics == {"loss": 2.0}
    assert (got.data.tags["num_tokens"], got.data.tags["eval_n_rows"], got.data.tags["online_errors"]) == ("512", "7", "0")


def test_logged_model_is_named_after_corpus_and_version(tracker, tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    run_id = _run(tracker)
    reg = register(tracker, run_id, ckpt, "sft", {"corpus": CORPUS, "format": "sft"})
    assert reg.registration_error is None and reg.model_uri == "models:/tracemill-sft/1"
    assert tracker.client.get_logged_model(reg.model_id).name == "tracemill-sft-v3"
    tracker.describe_model_version(run_id, "tracemill-sft", 1, reg.model_id,
                                   {"eval_success_rate": 0.5, "eval_n_rows": 12}, "corpus …")
    metrics = {m.key for m in tracker.client.get_logged_model(reg.model_id).metrics or []}
    assert metrics == {"eval_success_rate"}


def test_a_store_without_span_logging_keeps_the_spans_as_trace_artifacts(tmp_path, monkeypatch):
    """A file store (or a tracking server over one) cannot store spans in its database: the trace is still
    written, its spans as the trace's artifact, the way MLflow's own exporter falls back."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    tracker = MlflowTracker((tmp_path / "mlruns").as_uri(), experiment="file-store")
    report = _rollouts("careful", 2)
    run_id = _run(tracker)
    done = log_rollouts(tracker, report, run_id, CORPUS, limit=2)
    assert len(done.trace_ids) == 2
    trace = tracker.client.get_trace(done.trace_ids[0])
    assert "mlflow.trace.spansLocation" not in trace.info.tags
    assert sum(s.span_type == "TOOL" for s in trace.data.spans) == report["tasks"][0]["tool_calls"]
    assert log_rollouts(tracker, report, run_id, CORPUS, limit=2).skipped == 2
