"""The environment seam: a corpus spec names a world as 'module:factory' (+ config), built-in rewards resolve
as `tracemill.rewards:…`, user code runs under a timeout, and nothing outside the demo package imports it."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import pytest

from pipeline.config import CorpusSpec
from pipeline.demo.agents import policy_for
from pipeline.environment import (
    DEFAULT_ENVIRONMENT,
    Environment,
    EnvironmentCallError,
    call_with_timeout,
    load_environment,
    load_reward,
)
from pipeline.evaluate.online import online_eval
from pipeline.rewards import exact_answer, valid_tool_call
from pipeline.train.grpo import reward_functions
from pipeline.train.recipes import RLRecipe

ROOT = Path(__file__).resolve().parents[1]
DEMO_REWARDS = [f"pipeline.demo.rewards:{f}" for f in ("final_answer_reward", "tool_call_reward", "format_reward")]


def test_a_spec_without_environment_is_offline_only():
    spec = CorpusSpec(name="x", target="deeplake://local/x")
    assert spec.environment is None and not spec.online_on and spec.gate_metric == "loss"
    assert CorpusSpec(name="p", format="dpo", target="deeplake://local/p").gate_metric == "preference_accuracy"
    demo = CorpusSpec(name="d", target="deeplake://local/d", environment=DEFAULT_ENVIRONMENT)
    assert demo.online_on and demo.gate_metric == "success_rate" and demo.online.capture_to is None


@pytest.mark.parametrize(("fields", "message"), [
    ({"gate": {"metric": "success_rate"}}, "gate.metric: success_rate needs an environment"),
    ({"online": {"capture_to": "demo"}}, "online.capture_to needs an environment"),
    ({"online": {"capture": True}}, "online.capture was replaced by online.capture_to"),
])
def test_validation_names_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        CorpusSpec(name="x", target="deeplake://local/x", **fields)


def test_demo_environment_and_its_rewards_by_reference():
    env = load_environment(DEFAULT_ENVIRONMENT)
    assert isinstance(env, Environment) and env.name == "demo"
    assert [t["function"]["name"] for t in env.tools] == ["lookup_price", "calculator", "convert"]
    recipe = RLRecipe(base_model="m", output_dir="o", environment=DEFAULT_ENVIRONMENT, rewards=DEMO_REWARDS)
    fns = reward_functions(eos_token_id=2, recipe=recipe)
    assert [getattr(f, "__name__", "") for f in fns] == [
        "final_answer_reward", "tool_call_reward", "format_reward", "episode_reward"]
    with pytest.raises(ValueError, match="reward_weights needs 4 values"):
        RLRecipe(base_model="m", output_dir="o", environment=DEFAULT_ENVIRONMENT, rewards=DEMO_REWARDS,
                 reward_weights=[1.0, 1.0, 1.0])


@pytest.mark.parametrize("ref", ["pipeline.demo.environment", ":make_env", "pipeline.demo.environment:"])
def test_malformed_reference_is_refused(ref):
    with pytest.raises(ValueError, match="package.module:factory"):
        load_environment(ref)


def test_missing_module_or_factory_is_one_clear_error():
    with pytest.raises(ValueError, match="cannot be loaded"):
        load_environment("no_such_pkg.envs:make_env")
    with pytest.raises(ValueError, match="cannot be loaded"):
        load_reward("tracemill.rewards:no_such_reward")


def test_factory_must_return_an_environment():
    with pytest.raises(TypeError, match="Environment protocol"):
        load_environment("pipeline.models:Path")


def test_builtin_rewards_resolve_and_keep_trls_signature():
    assert load_reward("tracemill.rewards:valid_tool_call") is valid_tool_call
    tools = '[{"type": "function", "function": {"name": "add", "parameters": {"type": "object", ' \
            '"properties": {"a": {"type": "integer"}}, "required": ["a"], "additionalProperties": false}}}]'
    good = '<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>'
    bad = '<tool_call>{"name": "add", "arguments": {"a": "one"}}</tool_call>'
    kwargs = {"prompts": ["p"] * 4, "completion_ids": [[1]] * 4, "trainer_state": None, "tools": [tools] * 4,
              "ground_truth": ['{"answer": "Paris"}', '"paris."', "", '{"answer": "Rome"}']}
    assert valid_tool_call(completions=[good, bad, "no call", "<tool_call>{oops</tool_call>"], **kwargs) == \
        [1.0, 0.0, None, 0.0]
    assert exact_answer(completions=["Paris", " PARIS ", "x", "Paris"], **kwargs) == [1.0, 1.0, None, 0.0]


def test_user_code_timeout_and_exception_are_reported():
    with pytest.raises(EnvironmentCallError, match="timeout"):
        call_with_timeout("slow", time.sleep, 5, timeout_s=0.2)
    with pytest.raises(EnvironmentCallError, match="ZeroDivisionError"):
        call_with_timeout("boom", lambda: 1 / 0)


def test_online_eval_through_an_environment_object():
    env = load_environment()
    rep = online_eval(None, seed=3, n_tasks=4, policy_factory=lambda task: policy_for("careful", task), environment=env)
    assert rep["n_tasks"] == 4 and rep["success_rate"] == 1.0


def test_nothing_outside_demo_imports_it():
    """Only the demo package itself names `pipeline.demo` in pipeline/ and assets/ (assets/dev/demo.py is
    the demo entry point); examples/ is not imported by the pipeline at all."""
    offenders = []
    for f in [*(ROOT / "pipeline").rglob("*.py"), *(ROOT / "assets").rglob("*.py")]:
        rel = f.relative_to(ROOT)
        if rel.parts[:2] == ("pipeline", "demo") or rel.as_posix() == "assets/dev/demo.py":
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{rel}: {m}" for m in mods if m.startswith(("pipeline.demo", "examples"))]
    assert offenders == []


def test_episodes_in_lockstep_are_the_episodes_one_at_a_time():
    """`run_episodes` (what a batched model policy drives) runs each episode exactly as `run_episode`: same
    messages, answers and rewards, every open episode asked once per round, finished ones never again."""
    from pipeline.demo.environment import make_env
    from pipeline.demo.world import eval_tasks as demo_tasks
    from pipeline.environment import run_episode, run_episodes

    tasks = demo_tasks(5, 8)
    agents = ["careful", "hasty", "confused", "verbose"]
    alone = [run_episode(make_env(), policy_for(agents[i % 4], t, seed=1), t, max_steps=6) for i, t in enumerate(tasks)]
    policies = {i: policy_for(agents[i % 4], t, seed=1) for i, t in enumerate(tasks)}
    rounds: list[list[int]] = []

    def batched(indices, conversations):
        rounds.append(list(indices))
        return [policies[i](c) for i, c in zip(indices, conversations, strict=True)]

    finished: list[int] = []
    together = run_episodes([make_env() for _ in tasks], batched, tasks, max_steps=6,
                            on_done=lambda i, ep: finished.append(i))
    assert [(e.messages, e.final_answer, e.reward, e.error) for e in together] == \
        [(e.messages, e.final_answer, e.reward, e.error) for e in alone]
    assert rounds[0] == list(range(len(tasks))) and all(r == sorted(r) for r in rounds)
    assert sorted(finished) == list(range(len(tasks)))
    assert len(rounds) == max(sum(m["role"] == "assistant" for m in e.messages) for e in alone)
