"""Demo-world reward functions on hand-built completions, and GRPO with TRL on the tiny model."""

from __future__ import annotations

import json
import math

import pytest

from pipeline.chat.tracemill import render_prompt
from pipeline.demo.rewards import final_answer_reward, format_reward, parse_ground_truth, tool_call_reward
from pipeline.demo.world import SYSTEM_PROMPT, TOOLS, build_task, eval_tasks
from pipeline.train.grpo import rl_dataset, train_grpo
from pipeline.train.recipes import RLRecipe

TASK = build_task("rice", 3, 2.35, "EUR")  # 3 * 2.35 = 7.05 USD -> 6.49 EUR
GT = json.dumps(TASK.to_dict())
DEMO_REWARDS = [f"pipeline.demo.rewards:{f}" for f in ("final_answer_reward", "tool_call_reward", "format_reward")]


def call(tool: str, **args) -> str:
    return f'<tool_call>{json.dumps({"name": tool, "arguments": args})}</tool_call>'


def test_ground_truth_forms():
    assert parse_ground_truth(GT) == (TASK, 6.49)
    assert parse_ground_truth("6.49") == (None, 6.49)
    assert parse_ground_truth(json.dumps("The answer is 6.49 EUR.")) == (None, 6.49)
    assert parse_ground_truth(json.dumps({"answer": 6.49})) == (None, 6.49)
    assert parse_ground_truth("no number") == (None, None)


def test_final_answer_reward():
    completions = ["The answer is 6.49 EUR.", "The answer is 7.05 EUR.", "Maybe 6.49 or 7.05 EUR.",
                   "6.49" + call("convert", amount=7.05, from_currency="USD", to_currency="EUR"), "", "6.50 EUR"]
    assert final_answer_reward(completions, [GT] * 6) == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert final_answer_reward(["It is 6.49", "It is 5"], ["6.49 EUR", 6.49]) == [1.0, 0.0]
    convo = [[{"role": "assistant", "content": "The answer is 6.49 EUR."}]]  # conversational completions
    assert final_answer_reward(convo, [GT]) == [1.0]


def test_tool_call_reward():
    completions = [call("lookup_price", item="rice"), call("lookup_price", item="flour"),
                   call("lookup_price", name="rice"), call("calculator", expression="3 * 2.35"),
                   "The answer is 6.49 EUR.", "Looking it up." + call("lookup_price", item="Rice")]
    assert tool_call_reward(completions, [GT] * 6) == [1.0, 0.5, 0.5, 0.0, 0.0, 1.0]
    # the prompt already holds one call: the completion is judged as the second step (calculator)
    prompt = render_prompt([{"role": "user", "content": TASK.question},
                            {"role": "assistant", "tool_calls": [{"id": "1", "name": "lookup_price",
                                                                  "arguments": '{"item": "rice"}'}]},
                            {"role": "tool", "tool_call_id": "1", "content": "2.35 USD/kg"}])
    step2 = [call("calculator", expression="2.35 * 3"), call("lookup_price", item="rice")]
    assert tool_call_reward(step2, [GT] * 2, prompts=[prompt] * 2) == [1.0, 0.0]
    assert tool_call_reward([completions[0]], ["6.49"]) == [None]  # no task to check the call against


def test_format_reward():
    ok = call("lookup_price", item="rice")
    completions = [ok + "<|end|>", ok, ok, "<tool_call>{not json}</tool_call><|end|>", "",
                   '<tool_call>{"name": "lookup_price", "argu']
    ids = [[1, 6], [1, 6], [1, 2], [1], [6], [1]]
    assert format_reward(completions, completion_ids=ids, eos_token_id=6) == [1.0, 1.0, 0.5, 0.0, 0.0, 0.0]
    assert format_reward(["The answer is 6.49 EUR."]) == [0.5]  # finished or not is unknown without ids


def test_rewards_accept_trl_call_signature():
    """TRL 1.16 calls reward functions with keywords only, dataset columns included."""
    kwargs = {"prompts": ["p"] * 2, "completions": [call("lookup_price", item="rice"), "The answer is 6.49 EUR."],
              "completion_ids": [[1, 6], [2, 6]], "ground_truth": [GT] * 2, "task_id": [TASK.task_id] * 2,
              "trainer_state": None, "log_extra": lambda *a, **k: None, "log_metric": lambda *a, **k: None}
    assert final_answer_reward(**kwargs) == [0.0, 1.0]
    assert tool_call_reward(**kwargs) == [1.0, 0.0]
    assert format_reward(**kwargs, eos_token_id=6) == [1.0, 1.0]


def _rows(n: int) -> list[dict]:
    return [{"prompt": json.dumps([{"role": "system", "content": SYSTEM_PROMPT},
                                   {"role": "user", "content": t.question}]),
             "task_id": t.task_id, "ground_truth": json.dumps(t.to_dict()), "tools": json.dumps(TOOLS)}
            for t in eval_tasks(7, n)]


def test_recipe_and_rows_validation():
    with pytest.raises(ValueError, match="multiple of num_generations"):
        RLRecipe(base_model="m", output_dir="o", per_device_batch_size=6, num_generations=4)
    rows, skipped = rl_dataset([*_rows(2), {"prompt": "[]"}, {"ground_truth": GT}])
    assert len(rows) == 2 and skipped == 2 and rows[0]["prompt"].endswith("<|assistant|>")
    with pytest.raises(ValueError, match="nothing to train on"):
        train_grpo([{"prompt": "[]"}], RLRecipe(base_model="m", output_dir="o"))


def test_grpo_trains_saves_and_tracks(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from pipeline.tracking import MlflowTracker

    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "test-rl")
    recipe = RLRecipe(base_model=str(tiny_model_dir), output_dir=str(tmp_path / "grpo"), max_steps=2,
                      per_device_batch_size=4, num_generations=4, max_completion_length=16, learning_rate=1e-3,
                      device="cpu", rewards=DEMO_REWARDS)
    rows = [{k: v for k, v in r.items() if k != "tools"} for r in _rows(4)]  # short prompts keep it fast
    res = train_grpo(rows, recipe, tracker=tracker, run_tags={"corpus": "rl@v1"})
    assert res.steps == 2 and len(res.losses) == 2 and all(math.isfinite(x) for x in res.losses)
    assert res.tokens > 0 and res.tokens_per_second > 0 and res.train_rows == 4
    assert type(AutoModelForCausalLM.from_pretrained(res.checkpoint_dir)).__name__ == "LlamaForCausalLM"
    run = tracker.get_run(res.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.data.tags["trainer"] == "grpo"
    assert run.data.params["num_generations"] == "4" and run.data.params["max_completion_length"] == "16"
    assert {"reward", "rewards/tool_call_reward/mean", "rewards/format_reward/mean",
            "rewards/final_answer_reward/mean", "completions/mean_length", "loss"} <= set(run.data.metrics)
    print(f"\nGRPO tiny model on CPU: {res.steps_per_second:.2f} steps/s, {res.tokens_per_second:,.0f} tokens/s")
