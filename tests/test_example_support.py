"""Issue 14 item 4: the tau-bench-style support example — a careful scripted agent solves every task, a
hasty one breaks the policy and is scored 0, a confused one fails; held-out tasks never reach practice;
the eval report works for a world that is not the demo's; examples never import the demo package."""

from __future__ import annotations

import json
import re
from pathlib import Path
from random import Random

from examples.support.agents import AGENTS
from examples.support.environment import all_tasks, make_env, task_for
from pipeline.environment import run_episode
from pipeline.evaluate.compare import build_report
from pipeline.evaluate.online import online_eval

ENV = "examples.support.environment:make_env"
AGENT = {a.name: a for a in AGENTS}


def _run(agent: str, task):
    env = make_env()
    return env, run_episode(env, AGENT[agent].act(task, Random(task.task_id)), task)


def test_careful_solves_hasty_violates_confused_fails():
    refund_by_card = next(t for t in all_tasks() if t.task_id.startswith("support-refund")
                          and t.actions[0]["arguments"]["payment_method_id"].startswith("gift_card"))
    cancel_delivered = task_for("cancel", "#W1002")  # delivered: the right move is to refuse
    for task in (task_for("cancel", "#W1001"), cancel_delivered, refund_by_card, task_for("status", "#W1003")):
        env, ep = _run("careful", task)
        assert ep.reward == 1.0 and env.violations == [] and ep.error is None, (task, ep.messages)
    env, ep = _run("hasty", cancel_delivered)
    assert ep.reward == 0.0 and "only pending orders may be cancelled" in env.violations[0]
    env, ep = _run("hasty", refund_by_card)  # refunds to the user's credit card, not the gift card paid with
    assert ep.reward == 0.0 and "refunds go to the order's payment method" in env.violations[0]
    env, ep = _run("confused", task_for("cancel", "#W1001"))
    assert ep.reward == 0.0 and any(m.get("is_error") for m in ep.messages)


def test_violation_is_zero_even_when_the_database_ends_right():
    """A refused write leaves the database as the ground truth says; the breach alone costs the reward."""
    task, env = task_for("cancel", "#W1002"), make_env()
    env.reset(task)
    assert env.step("cancel_pending_order", json.dumps({"order_id": "#W1002", "reason": "no longer needed"}))[1]
    done = [{"role": "assistant", "content": "I cannot cancel it.", "tool_calls": []}]
    assert env.db == env.expected_db(task) and env.reward(task, done) == 0.0


def test_heldout_tasks_are_fixed_and_never_practised():
    env = make_env()
    held = {t.task_id for t in env.eval_tasks(1000, 12)}
    assert held == {t.task_id for t in env.eval_tasks(7, 12)} and len(held) == 12
    assert not held & {t.task_id for t in env.train_tasks()}
    assert env.load_task(json.loads(json.dumps(env.eval_tasks(0, 1)[0].to_dict()))) == env.eval_tasks(0, 1)[0]


def test_online_eval_and_report_outside_the_demo_world():
    """Before: the report's demo slices read task['currency'] and eval_ failed with KeyError for any other world."""
    good = online_eval(None, seed=1000, n_tasks=12, max_steps=4, environment=ENV,
                       policy_factory=lambda t: AGENT["careful"].act(t, Random(0)),
                       rewards=["tracemill.rewards:valid_tool_call"])
    bad = online_eval(None, seed=1000, n_tasks=12, max_steps=4, environment=ENV,
                      policy_factory=lambda t: AGENT["confused"].act(t, Random(0)))
    assert good["success_rate"] == 1.0 and good["reward/valid_tool_call"] == 1.0 and bad["success_rate"] == 0.0
    report = build_report(good, base=bad)
    assert set(report["tables"]["checkpoint"]) == {"all"} and report["tables"]["base"]["all"]["success_rate"] == 0.0


def test_examples_never_import_the_demo_package():
    root = Path(__file__).resolve().parents[1] / "examples"
    offenders = [str(p) for p in root.rglob("*.py") if re.search(r"^\s*(from|import)\s+pipeline\.demo", p.read_text(), re.M)]
    assert offenders == []
