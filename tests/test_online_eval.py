"""Online evaluation: deterministic rollouts of a checkpoint, captured into a workspace, and the
harness proven on a scripted agent whose answers are known to be right."""

from __future__ import annotations

import json
import math

import pytest

from pipeline.demo.agents import policy_for
from pipeline.demo.world import eval_tasks
from pipeline.evaluate.online import model_policy, online_eval, per_task, summarize

N_TASKS, MAX_STEPS, MAX_NEW = 4, 3, 24


def _strip_timing(report: dict) -> str:
    """Everything but wall-clock seconds must repeat exactly (as JSON, where NaN equals NaN)."""
    out = {k: v for k, v in report.items() if not k.startswith("seconds")}
    out["tasks"] = [{k: v for k, v in t.items() if k != "seconds"} for t in report["tasks"]]
    return json.dumps(out, sort_keys=True)


@pytest.fixture(scope="module")
def model_report(tiny_model_dir):
    return online_eval(tiny_model_dir, seed=3, n_tasks=N_TASKS, max_steps=MAX_STEPS, max_new_tokens=MAX_NEW)


def test_online_eval_is_deterministic(tiny_model_dir, model_report):
    again = online_eval(tiny_model_dir, seed=3, n_tasks=N_TASKS, max_steps=MAX_STEPS, max_new_tokens=MAX_NEW)
    assert _strip_timing(again) == _strip_timing(model_report)
    r = model_report
    assert r["n_tasks"] == N_TASKS and len(r["tasks"]) == N_TASKS
    assert [t["task_id"] for t in r["tasks"]] == [t.task_id for t in eval_tasks(3, N_TASKS)]
    assert 0.0 <= r["success_rate"] <= 1.0 and 0.0 <= r["invalid_output_rate"] <= 1.0
    assert 1 <= r["mean_steps"] <= MAX_STEPS
    assert r["agent"] == f"ckpt:{tiny_model_dir.name}"


def test_model_policy_writes_a_parsed_assistant_turn(tiny_model_dir):
    policy = model_policy(tiny_model_dir, max_new_tokens=8)
    assert model_policy(tiny_model_dir, max_new_tokens=8).model is policy.model  # cached, not reloaded
    reply = policy([{"role": "user", "content": "How much do 2 kg of rice cost in USD?"}])
    assert set(reply) == {"content", "tool_calls"} and isinstance(reply["tool_calls"], list)
    turn = policy.turns[-1]
    assert turn.output_tokens <= 8 and turn.finish_reason in ("stop", "length")


def test_rollouts_are_captured_into_a_workspace(tiny_model_dir, tmp_path):
    from pipeline.capture.workspace import Workspace
    from pipeline.lake.ingest import ingest_outcomes, ingest_trajectories

    ws = Workspace.open("eval-capture", home=tmp_path)
    report = online_eval(tiny_model_dir, seed=3, n_tasks=N_TASKS, max_steps=MAX_STEPS, max_new_tokens=MAX_NEW,
                         workspace=ws, tag="nightly")
    ws.close()
    days = ws.days()
    assert len(days) == 1
    df, stats = ingest_trajectories(ws, days[0])
    assert stats.quarantined == 0 and df.height == N_TASKS
    assert set(df["agent"]) == {f"ckpt:{tiny_model_dir.name}"}
    by_id = {row["trajectory_id"]: row for row in df.iter_rows(named=True)}
    for task in report["tasks"]:
        row = by_id[task["trajectory_id"]]
        meta = json.loads(row["metadata_json"])
        assert meta["checkpoint"] == str(tiny_model_dir.resolve()) and meta["eval_tag"] == "nightly"
        assert meta["task"]["task_id"] == task["task_id"] == row["task_id"]
        messages = json.loads(row["messages_json"])
        assert [m["role"] for m in messages[:2]] == ["system", "user"]
        assistants = [m for m in messages if m["role"] == "assistant"]
        assert len(assistants) == task["steps"] and assistants[0]["meta"]["output_tokens"] <= MAX_NEW
    outcomes, _ = ingest_outcomes(ws)
    rewards = {r["trajectory_id"]: r["value"] for r in outcomes.filter(outcomes["name"] == "reward").iter_rows(named=True)}
    assert rewards == {t["trajectory_id"]: t["reward"] for t in report["tasks"]}
    assert set(outcomes["source"]) == {"env"}


def test_harness_scores_a_known_correct_policy_as_perfect(tmp_path):
    from pipeline.capture.workspace import Workspace
    from pipeline.lake.ingest import ingest_outcomes, ingest_trajectories

    ws = Workspace.open("eval-scripted", home=tmp_path)
    report = online_eval(None, seed=5, n_tasks=6, policy_factory=lambda task: policy_for("careful", task),
                         agent="careful", workspace=ws, tag="harness")
    ws.close()
    assert report["success_rate"] == 1.0 and report["mean_reward"] == 1.0
    assert report["tool_call_error_rate"] == 0.0 and report["invalid_output_rate"] == 0.0
    assert math.isnan(report["cut_turn_rate"])  # a scripted policy generates no tokens
    # lookup + calculator (+ convert when not USD) + the answer
    assert per_task(report, "steps") == [3.0 if t.currency == "USD" else 4.0 for t in eval_tasks(5, 6)]
    outcomes, _ = ingest_outcomes(ws)
    assert sorted(outcomes.filter(outcomes["name"] == "success")["value"]) == [1.0] * 6
    df, _ = ingest_trajectories(ws, ws.days()[0])
    assert set(df["agent"]) == {"careful"} and df["n_tool_errors"].sum() == 0
    assert sorted(df["n_tool_calls"]) == sorted(t["tool_calls"] for t in report["tasks"])


def test_harness_sees_tool_errors_and_wrong_answers():
    """The confused agent starts with bad calls: errors and failures must show up in the metrics."""
    report = online_eval(None, seed=0, n_tasks=12, policy_factory=lambda task: policy_for("confused", task))
    assert report["tool_call_error_rate"] > 0 and report["success_rate"] < 1.0
    assert report["agent"] == "ckpt:policy"


def test_summarize_pools_rates_and_handles_no_calls():
    rows = [{"success": True, "reward": 1.0, "steps": 3, "tool_calls": 2, "tool_errors": 0, "invalid_turns": 0},
            {"success": False, "reward": 0.0, "steps": 1, "tool_calls": 0, "tool_errors": 0, "invalid_turns": 1}]
    s = summarize(rows)
    assert s["success_rate"] == 0.5 and s["tool_call_error_rate"] == 0.0 and s["invalid_output_rate"] == 0.25
    assert math.isnan(s["cut_turn_rate"])  # no turn log
    assert summarize([{**r, "cut_turns": c} for r, c in zip(rows, (1, 1), strict=True)])["cut_turn_rate"] == 0.5
    assert math.isnan(summarize(rows[1:])["tool_call_error_rate"]) and math.isnan(summarize([])["success_rate"])
    with pytest.raises(ValueError):
        online_eval(None)


def test_batched_rollouts_match_one_at_a_time(tiny_model_dir, model_report):
    """`online_eval` advances all episodes together (one left-padded `generate` per round); the same model
    asked one episode at a time writes the same turns, so batching changes the speed, not the numbers."""
    one = model_policy(tiny_model_dir, max_new_tokens=MAX_NEW)
    sequential = online_eval(tiny_model_dir, seed=3, n_tasks=N_TASKS, max_steps=MAX_STEPS, max_new_tokens=MAX_NEW,
                             policy_factory=lambda task: one)
    assert [t["messages"] for t in sequential["tasks"]] == [t["messages"] for t in model_report["tasks"]]
    assert per_task(sequential, "steps") == per_task(model_report, "steps")
    assert len(one.turns) == sum(per_task(model_report, "steps"))  # one generate per episode and turn there
    # turns that ran out of tokens, counted from the policy's own log: a cut tool call does not parse
    cut = sum(t.finish_reason == "length" for t in one.turns) / len(one.turns)
    assert sequential["cut_turn_rate"] == model_report["cut_turn_rate"] == cut
    assert model_report["max_new_tokens"] == MAX_NEW


def test_a_given_environment_instance_runs_its_episodes_one_at_a_time(tiny_model_dir):
    """One instance is reset per episode, so its episodes must not interleave (each reset is followed by that
    episode's reward before the next reset), and its numbers equal those with a factory, which gives a fresh
    instance per episode and lets the model advance all episodes in one batch."""
    from pipeline.demo.environment import DemoEnvironment

    class Recorded(DemoEnvironment):
        def __init__(self):
            super().__init__()
            self.events: list[str] = []

        def reset(self, task):
            self.events.append("reset")
            return super().reset(task)

        def reward(self, task, messages):
            self.events.append("reward")
            return super().reward(task, messages)

    env = Recorded()
    instance = online_eval(tiny_model_dir, seed=4, n_tasks=N_TASKS, max_steps=MAX_STEPS, max_new_tokens=MAX_NEW,
                           environment=env)
    assert env.events == ["reset", "reward"] * N_TASKS
    by_ref = online_eval(tiny_model_dir, seed=4, n_tasks=N_TASKS, max_steps=MAX_STEPS, max_new_tokens=MAX_NEW,
                         environment="pipeline.demo.environment:make_env")
    assert [t["messages"] for t in instance["tasks"]] == [t["messages"] for t in by_ref["tasks"]]
