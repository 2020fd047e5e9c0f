"""The demo world: tools, verifiable rewards, scripted agents and a reproducible populated workspace."""

from datetime import date

import orjson
import pytest

from pipeline.capture.landing import read_landed
from pipeline.capture.workspace import Workspace
from pipeline.demo.agents import AGENTS, deliver_late, make_bad_records, policy_for, populate
from pipeline.demo.rollout import rollout
from pipeline.demo.scoring import grade, score_tool_call
from pipeline.demo.world import TOOLS, Task, ToolError, build_task, calculate, call_tool, eval_tasks
from pipeline.schema import Message, Outcome, Preference, Trajectory

DAYS = ["2026-11-16", "2026-11-17"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    ws = Workspace.open("demo", home=tmp_path_factory.mktemp("home"))
    stats = populate(ws, days=DAYS, per_day=40, seed=7)
    yield ws, stats
    ws.close()


def landed(ws: Workspace, kind: str) -> list[dict]:
    return [line.record for line in read_landed(ws.landing, kind)]


def good_trajectories(ws: Workspace) -> list[Trajectory]:
    return [Trajectory.model_validate(r) for r in landed(ws, "trajectory") if "-bad" not in r["trajectory_id"]]


def test_tools_follow_the_expected_chain():
    task = build_task("apples", 3, 2.35, "EUR")
    assert task.question == "How much do 3 kg of apples cost in EUR?"
    assert task.task_id == build_task("apples", 3, 2.35, "EUR").task_id != build_task("apples", 3, 2.35, "GBP").task_id
    assert [name for name, _ in task.expected_chain] == ["lookup_price", "calculator", "convert"]
    assert call_tool(task, "lookup_price", {"item": "apples"}) == ("2.35 USD/kg", False)
    assert call_tool(task, "calculator", '{"expression": "3 * 2.35"}') == ("7.05", False)
    assert call_tool(task, "convert", {"amount": 7.05, "from_currency": "USD", "to_currency": "EUR"}) == ("6.49 EUR", False)
    assert task.answer == 6.49 and task.total_usd == 7.05
    assert [n for n, _ in build_task("nails", 2, 4.0, "USD").expected_chain] == ["lookup_price", "calculator"]
    assert build_task("nails", 2, 4.0, "USD").question == "How much do 2 packs of nails cost in USD?"
    # errors are observations (is_error=True), never exceptions
    for name, args, msg in [("get_price", {"item": "apples"}, "unknown tool"),
                            ("lookup_price", {"name": "apples"}, "unexpected argument"),
                            ("lookup_price", {"item": "unobtainium"}, "unknown item"),
                            ("convert", {"amount": "7.05", "from_currency": "USD", "to_currency": "EUR"}, "number"),
                            ("convert", {"amount": 1, "from_currency": "USD", "to_currency": "XYZ"}, "currency"),
                            ("calculator", "{not json", "JSON")]:
        content, is_error = call_tool(task, name, args)
        assert is_error and msg in content, (name, content)
    assert {t["function"]["name"] for t in TOOLS} == {"lookup_price", "calculator", "convert"}
    assert all(t["type"] == "function" and t["function"]["parameters"]["required"] for t in TOOLS)


def test_calculator_is_safe_arithmetic_only():
    assert calculate("3 * (2 + 0.5) / 2") == "3.75"
    assert calculate("-2 + 1") == "-1.00" and calculate("1.5 * 1.10") == "1.65"
    for bad in ["__import__('os').system('true')", "2 ** 10", "a + 1", "(1).real", "1; 2", "", "1 / 0",
                "[1, 2]", "True + 1", "9" * 300, "'a' * 3", "lambda: 1"]:
        with pytest.raises(ToolError):
            calculate(bad)


def test_grade_and_step_scores():
    task = build_task("apples", 3, 2.35, "EUR")
    assert grade(task, "The answer is 6.49 EUR.") == 1.0
    assert grade(task, "About 6.485 EUR") == grade(task, "6.50") == grade(task, "6.48") == 1.0  # within 0.01
    assert grade(task, "The answer is 7.05 EUR.") == 0.0 and grade(task, "") == 0.0 and grade(task, None) == 0.0
    assert grade(task, "6.49 or 7.05") == 1.0 and grade(task, "6.49 or 7.05", strict=True) == 0.0
    assert grade(build_task("coffee", 9, 20.0, "USD"), "It is 180.00 USD") == 1.0
    big = Task(**{**task.to_dict(), "answer": 1065.42})
    assert grade(big, "The answer is 1,065.42 EUR.") == 1.0
    assert score_tool_call(task, 0, "lookup_price", {"item": "Apples"}) == 1.0
    assert score_tool_call(task, 0, "lookup_price", {"item": "rice"}) == 0.5
    assert score_tool_call(task, 0, "calculator", {"expression": "3 * 2.35"}) == 0.0
    assert score_tool_call(task, 1, "calculator", '{"expression": "2.35*3"}') == 1.0
    assert score_tool_call(task, 1, "calculator", {"expression": "3 * 2.53"}) == 0.5
    assert score_tool_call(task, 2, "convert", {"amount": 7.05, "from_currency": "USD", "to_currency": "EUR"}) == 1.0
    assert score_tool_call(task, 2, "convert", {"amount": "7.05", "from_currency": "USD", "to_currency": "EUR"}) == 0.5
    assert score_tool_call(task, 3, "convert", {}) == 0.0


def test_rollout_runs_policies_against_the_real_tools():
    tasks = eval_tasks(0, 30)
    assert [t.task_id for t in tasks] == [t.task_id for t in eval_tasks(0, 30)]
    assert len({t.task_id for t in tasks}) > 25 and {t.currency for t in tasks} >= {"USD", "EUR"}
    for task in tasks:
        messages, final, reward = rollout(policy_for("careful", task), task)
        assert reward == 1.0 and final.startswith("The answer is")
        assert all(Message.model_validate(m) for m in messages)
        calls = [c for m in messages for c in m.get("tool_calls", [])]
        assert [score_tool_call(task, i, c["name"], c["arguments"]) for i, c in enumerate(calls)] == [1.0] * len(calls)
    task = tasks[0]

    def openai_style(messages):  # nested `function` calls with dict arguments are accepted too
        if len(messages) == 2:
            return {"tool_calls": [{"type": "function", "function": {"name": "lookup_price",
                                                                     "arguments": {"item": task.item}}}]}
        return {"content": f"The answer is {messages[-1]['content'].split()[0]}"}

    messages, _, _ = rollout(openai_style, task)
    assert messages[2]["tool_calls"][0] == {"id": "call_1", "name": "lookup_price",
                                            "arguments": orjson.dumps({"item": task.item}).decode()}
    assert messages[3] == {"role": "tool", "tool_call_id": "call_1", "name": "lookup_price",
                           "content": f"{task.price:.2f} USD/{task.unit}", "is_error": False}
    looping = rollout(lambda m: {"tool_calls": [{"name": "calculator", "arguments": {"expression": "1"}}]},
                      task, max_steps=3)
    assert looping[1:] == ("", 0.0) and len(looping[0]) == 2 + 3 * 2


def test_populate_is_deterministic(tmp_path):
    def records(home, seed):
        ws = Workspace.open("demo", home=tmp_path / home)
        stats = populate(ws, days=DAYS, per_day=12, seed=seed)
        deliver_late(ws, stats)
        ws.close()
        return {kind: sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in landed(ws, kind))
                for kind in ("trajectory", "outcome", "preference")}

    first, second = records("a", 3), records("b", 3)
    assert first == second and all(first.values())
    assert records("c", 4)["trajectory"] != first["trajectory"]


def test_population_is_mixed_and_careful_is_always_right(world):
    ws, stats = world
    assert stats.trajectories == 80 and set(stats.trajectories_per_agent) == set(AGENTS)
    assert 0.3 <= stats.success_rate <= 0.9
    rates = stats.success_rates()
    assert rates["careful"] == 1.0 and min(rates.values()) < 0.8
    trajectories = good_trajectories(ws)
    assert len(trajectories) == 80 and len({t.trajectory_id for t in trajectories}) == 80
    by_task: dict[str, set[str]] = {}
    for traj in trajectories:
        task = Task.from_dict(traj.metadata["task"])
        by_task.setdefault(task.task_id, set()).add(traj.agent.name)
        assert traj.task_id == task.task_id and traj.tools == TOOLS and traj.day in DAYS
        assert [m.role for m in traj.messages[:2]] == ["system", "user"] and traj.messages[-1].role == "assistant"
        steps = [m.meta for m in traj.messages if m.role == "assistant"]
        assert all(s.input_tokens and s.output_tokens and s.latency_ms for s in steps)
        stamps = [traj.started_at] + [s.timestamp for s in steps]
        assert stamps == sorted(stamps) and traj.ended_at == stamps[-1]
        calls = [c for m in traj.messages for c in m.tool_calls]
        if traj.agent.name == "careful":
            assert stats.rewards[traj.trajectory_id] == 1.0
            assert [score_tool_call(task, i, c.name, c.arguments) for i, c in enumerate(calls)] == [1.0] * len(calls)
        assert stats.rewards[traj.trajectory_id] == grade(task, traj.messages[-1].content)
    assert any(m.is_error for t in trajectories for m in t.messages)  # confused agents hit tool errors
    assert max(len(agents) for agents in by_task.values()) == 3  # several agents per task


def test_late_outcomes_are_held_then_delivered(world, tmp_path):
    ws, stats = world
    landed_now = [Outcome.model_validate(r) for r in landed(ws, "outcome")]
    held = list(stats.late_outcomes)
    assert held and stats.outcomes_written == len(landed_now)
    assert 0.15 <= len(held) / (len(held) + len(landed_now)) <= 0.45
    assert not {o.outcome_id for o in held} & {o.outcome_id for o in landed_now}
    day_of = {t.trajectory_id: t.day for t in good_trajectories(ws)}
    assert all(date.fromisoformat(day_of[o.trajectory_id]) < o.recorded_at.date() for o in held)
    assert {o.name for o in held} == {"reward", "success"}
    assert deliver_late(ws, stats) == len(held) and stats.late_outcomes == [] and stats.late_delivered == len(held)
    assert deliver_late(ws, stats) == 0
    everything = [Outcome.model_validate(r) for r in landed(ws, "outcome")]
    assert {(o.trajectory_id, o.name) for o in everything} == {(t, n) for t in day_of for n in ("reward", "success")}
    assert all(o.value == stats.rewards[o.trajectory_id] for o in everything if o.name == "reward")


def test_preferences_and_bad_records(world):
    ws, stats = world
    prefs = [Preference.model_validate(r) for r in landed(ws, "preference")]
    assert len(prefs) == stats.preferences == 4
    assert all(stats.rewards[p.chosen] == 1.0 and stats.rewards[p.rejected] == 0.0 for p in prefs)
    task_of = {t.trajectory_id: t.task_id for t in good_trajectories(ws)}
    assert all(task_of[p.chosen] == task_of[p.rejected] == p.task_id for p in prefs)
    bad = [r for r in landed(ws, "trajectory") if "-bad" in r["trajectory_id"]]
    assert stats.bad_records == len(bad) == 2
    for rec in bad + make_bad_records(7, DAYS[0], 3)[2:]:
        with pytest.raises(ValueError):
            Trajectory.model_validate(rec)
