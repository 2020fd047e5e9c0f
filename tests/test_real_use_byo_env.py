"""Issue 14 'done when': an environment defined here (not the demo world) drives online eval, GRPO rewards
from multi-step episodes and the gate through a corpus spec; a spec without one is offline-only with an
offline gate; reward functions that raise or hang are reported and the run goes on."""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass

from pipeline.config import CorpusSpec
from pipeline.evaluate.compare import gate
from pipeline.evaluate.online import online_eval
from pipeline.evaluate.stage import offline_gate
from pipeline.train.episode_reward import EpisodeReward
from pipeline.train.grpo import reward_functions, train_grpo
from pipeline.train.stage import recipe_for

ENV = "tests.test_real_use_byo_env:make_env"
ADD = {"type": "function", "function": {"name": "add", "description": "a + b", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"], "additionalProperties": False}}}


# ---- the user's environment and rewards: what a team writes for its own agent ---------------------------
@dataclass(frozen=True)
class SumTask:
    task_id: str
    a: int
    b: int

    def to_dict(self) -> dict:
        return {"task_id": self.task_id, "a": self.a, "b": self.b, "answer": str(self.a + self.b)}


class AdderEnv:
    """Add two numbers with the `add` tool; the answer must be the sum."""

    name = "adder"
    tools = [ADD]

    def __init__(self, offset: int = 0):
        self.offset = offset

    def eval_tasks(self, seed: int, n: int) -> list[SumTask]:
        return [SumTask(f"sum-{seed}-{i}", seed + i + self.offset, 2 * i) for i in range(n)]

    def load_task(self, data: dict) -> SumTask:
        return SumTask(data["task_id"], data["a"], data["b"])

    def reset(self, task: SumTask) -> list[dict]:
        return [{"role": "system", "content": "Use add."}, {"role": "user", "content": f"{task.a} + {task.b}?"}]

    def step(self, name: str, arguments: str) -> tuple[str, bool]:
        args = json.loads(arguments)
        return str(args["a"] + args["b"]), False

    def reward(self, task: SumTask, messages: list[dict]) -> float:
        return float((messages[-1].get("content") or "").strip() == str(task.a + task.b))


def make_env(offset: int = 0) -> AdderEnv:
    return AdderEnv(offset)


def raising_reward(completions, **kwargs):
    raise RuntimeError("bug in my reward")


def hanging_reward(completions, **kwargs):
    time.sleep(30)
    return [1.0] * len(completions)


def good_policy(task):
    """Calls add, then answers with the tool's result."""
    def act(messages):
        if messages[-1]["role"] == "tool":
            return {"content": messages[-1]["content"]}
        a, b = map(int, re.findall(r"\d+", messages[-1]["content"]))
        return {"tool_calls": [{"name": "add", "arguments": {"a": a, "b": b}}]}
    return act


def bad_policy(task):
    return lambda messages: {"content": "no idea"}


# ---- the tests --------------------------------------------------------------------------------------------
SPEC = CorpusSpec(name="adder", format="rl", target="deeplake://local/adder", environment=ENV,
                  environment_config={"offset": 1}, online={"n_tasks": 4, "max_steps": 3, "timeout_s": 2.0},
                  rewards=["tracemill.rewards:valid_tool_call", "tracemill.rewards:exact_answer",
                           f"{__name__}:raising_reward", f"{__name__}:hanging_reward"],
                  train={"max_steps": 1, "batch_size": 4, "num_generations": 4, "max_completion_length": 12})


def _online(policy_factory):
    return online_eval(None, seed=SPEC.online.seed, n_tasks=SPEC.online.n_tasks, max_steps=SPEC.online.max_steps,
                       policy_factory=policy_factory, environment=SPEC.environment,
                       environment_config=SPEC.environment_config, rewards=SPEC.rewards,
                       timeout_s=SPEC.online.timeout_s)


def test_online_eval_and_gate_in_a_users_environment():
    good, bad = _online(good_policy), _online(bad_policy)
    assert good["environment"] == ENV and good["n_tasks"] == 4 and good["errors"] == 0
    assert good["success_rate"] == 1.0 and bad["success_rate"] == 0.0 and good["mean_steps"] == 2.0
    assert good["tasks"][0]["task"]["a"] == 1000 + 1  # environment_config reached the factory
    assert good["reward/valid_tool_call"] == 1.0 and good["reward/exact_answer"] == 1.0
    assert bad["reward/exact_answer"] == 0.0 and math.isnan(bad["reward/valid_tool_call"])  # no call: n/a
    # the raising and the hanging reward are reported per rollout; every rollout still ran
    errors = good["tasks"][0]["reward_errors"]
    assert any("RuntimeError: bug in my reward" in e for e in errors) and any("timeout" in e for e in errors)
    assert SPEC.gate_metric == "success_rate"
    assert gate(good, bad, SPEC.gate_metric, SPEC.gate.margin)[0]  # better than before: promoted
    passed, message = gate(bad, good, SPEC.gate_metric, SPEC.gate.margin)
    assert not passed and "success_rate gate FAILED" in message


def test_an_environment_that_raises_fails_only_its_episode():
    def policy(task):
        return lambda messages: {"tool_calls": [{"name": "add", "arguments": {"a": "x"}}]}  # step raises KeyError
    rep = _online(lambda task: policy(task) if task.b == 2 else good_policy(task))
    assert rep["errors"] == 1 and rep["success_rate"] == 0.75
    failed = next(t for t in rep["tasks"] if "error" in t)
    assert "adder.step(add): KeyError" in failed["error"] and failed["reward"] == 0.0


def test_grpo_rewards_come_from_multi_step_episodes():
    recipe = recipe_for(SPEC.model_copy(update={"rewards": ["tracemill.rewards:exact_answer"]}), "m", "o")
    [exact, episode] = reward_functions(None, recipe)
    assert isinstance(episode, EpisodeReward) and recipe.environment_config == {"offset": 1}
    task = make_env(1).eval_tasks(SPEC.online.seed, 1)[0]
    truth = [json.dumps(task.to_dict())] * 2
    call = f'<tool_call>{{"name": "add", "arguments": {{"a": {task.a}, "b": {task.b}}}}}</tool_call>'
    episode.policy = lambda messages: {"content": messages[-1]["content"]}  # continues: repeats the tool result
    assert episode(completions=[call, "7"], ground_truth=truth) == [1.0, 0.0]
    assert [e["steps"] for e in episode.episodes] == [2, 1]  # the call was executed, then the policy answered
    assert exact(completions=[call, str(task.a + task.b)], ground_truth=truth) == [0.0, 1.0]  # a tool call is no answer


def test_grpo_trains_in_a_users_environment(tiny_model_dir, tmp_path):
    spec = SPEC.model_copy(update={"rewards": ["tracemill.rewards:valid_tool_call", f"{__name__}:raising_reward"]})
    recipe = recipe_for(spec, str(tiny_model_dir), str(tmp_path / "grpo")).model_copy(update={"device": "cpu"})
    env = make_env(1)
    rows = [{"prompt": json.dumps(env.reset(t)), "ground_truth": json.dumps(t.to_dict()), "task_id": t.task_id}
            for t in env.eval_tasks(0, 4)]
    res = train_grpo(rows, recipe)  # the raising reward is reported (reward_errors/…), the run goes on
    assert res.steps == 1 and all(math.isfinite(x) for x in res.losses)
    [valid, raising, episode] = reward_functions(None, recipe)
    assert raising(completions=["x"], ground_truth=["{}"]) == [None] and "bug in my reward" in raising.errors[0]


def test_no_environment_means_offline_only_and_an_offline_gate():
    spec = CorpusSpec(name="plain", target="deeplake://local/plain")
    assert not spec.online_on and spec.gate_metric == "loss"
    better = {"checkpoint": {"eval": {"loss": 1.0}}, "previous": {"eval": {"loss": 1.2}}}
    worse = {"checkpoint": {"eval": {"loss": 1.5}}, "previous": {"eval": {"loss": 1.2}}}
    assert offline_gate(spec, better) == (True, "loss gate passed: 1.0000 vs previous 1.2000 (lower is better, margin 0.1)")
    assert offline_gate(spec, worse)[0] is False
    acc = CorpusSpec(name="acc", target="deeplake://local/acc", gate={"metric": "final_answer_accuracy", "margin": 0})
    assert offline_gate(acc, {"checkpoint": {"eval": {"final_answer_accuracy": 0.5}},
                              "previous": {"eval": {"final_answer_accuracy": 0.6}}})[0] is False
    assert offline_gate(spec, {"checkpoint": {"eval": {"loss": 1.0}}, "previous": None})[0]  # first checkpoint


def test_a_specs_turn_budget_reaches_online_eval_and_grpo_episodes(tiny_model_dir, tmp_path):
    """`online.max_new_tokens` is what every generated turn may spend, in the online stage and in the turns GRPO
    plays after its sampled first turn (the stage once ignored it: a real model's convert call, ~50-70 tokens,
    was cut at the old 48/64 and never parsed)."""
    from pipeline.evaluate.stage import _online, online_report_name

    spec = SPEC.model_copy(update={"online": SPEC.online.model_copy(update={"max_new_tokens": 7})})
    recipe = recipe_for(spec, "m", "o")
    assert recipe.episode_max_new_tokens == 7 and recipe.max_completion_length == 12  # first turn: its own budget
    assert reward_functions(None, recipe)[-1].max_new_tokens == 7
    assert online_report_name(spec) != online_report_name(SPEC)  # a report per budget, never another's
    rep = _online(spec, str(tiny_model_dir), None, "budget", tmp_path / online_report_name(spec))
    assert rep["max_new_tokens"] == 7 and rep["n_tasks"] == 4
    assert 0.0 <= rep["cut_turn_rate"] <= 1.0
