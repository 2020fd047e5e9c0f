"""GRPO with TRL on the base model's own chat template and the reward functions of the corpus's environment, tracked in MLflow.

Single-turn: each prompt (tool list + system + user, rendered as *text* with `pipeline.chat.render_prompt`,
ending with the assistant header) gets `num_generations` sampled next turns, scored by the reward functions
in `pipeline.demo.rewards` (first tool call, final answer, format). Tools are not executed during the rollout:
multi-step tool use through GRPO's `tools=` would need a chat template TRL can parse (e.g. its qwen3 one) and
is left out on purpose; the first action is where a tiny model's mistakes start anyway.

Why text prompts: our tokenizer's template is custom, so TRL's conversational path would decode completions
without a response parser anyway; text keeps prompt tokens identical to the SFT rendering (no BOS is added by
our tokenizer; a tokenizer that adds one gets it here as in the template's own text).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pipeline.environment import DEFAULT_ENVIRONMENT, RewardFunction, load_environment
from pipeline.jsonio import dumps_json
from pipeline.train import launch
from pipeline.train.recipes import RLRecipe
from pipeline.train.result import TrainResult
from pipeline.train.text_columns import prompt_text
from pipeline.train.tracked_run import (
    common_args,
    load_policy,
    load_tokenizer,
    lora_config,
    run_tracked,
    use_lora,
)


def rl_dataset(rows: Iterable[Mapping[str, Any]], tokenizer: Any = None) -> tuple[list[dict[str, str]], int]:
    """`prompt` text + `ground_truth` / `task_id` strings (handed to the reward functions); rows without a
    renderable prompt or a ground truth are skipped."""
    out, skipped = [], 0
    for row in rows:
        truth = row.get("ground_truth")
        try:
            if truth is None or truth == "":
                raise ValueError("no ground truth")
            out.append({"prompt": prompt_text(row["prompt"], row.get("tools"), tokenizer),
                        "ground_truth": truth if isinstance(truth, str) else dumps_json(truth),
                        "task_id": str(row.get("task_id") or "")})
        except (ValueError, KeyError, TypeError):
            skipped += 1
    return out, skipped


def reward_functions(eos_token_id: int | None, environment: str = DEFAULT_ENVIRONMENT) -> list[RewardFunction]:
    """The environment's GRPO rewards (`pipeline.environment`; the demo world's by default)."""
    return load_environment(environment).reward_functions(eos_token_id)


def _build(data: list[dict[str, str]], recipe: RLRecipe) -> Callable[[list], Any]:
    def build(callbacks: list) -> Any:
        import datasets
        from trl import GRPOConfig, GRPOTrainer

        model, tokenizer = load_policy(recipe.base_model, recipe.device)
        config = GRPOConfig(
            **common_args(recipe), num_generations=recipe.num_generations,
            max_completion_length=recipe.max_completion_length, temperature=recipe.temperature, beta=recipe.beta,
            reward_weights=recipe.reward_weights, use_vllm=False, log_completions=False)
        return GRPOTrainer(model=model, reward_funcs=reward_functions(tokenizer.eos_token_id, recipe.environment), args=config,
                           train_dataset=datasets.Dataset.from_list(data), processing_class=tokenizer,
                           callbacks=callbacks,
                           peft_config=lora_config(recipe.lora_r, recipe.lora_alpha) if use_lora(recipe) else None)

    return build


def train_grpo(rows: Iterable[Mapping[str, Any]], recipe: RLRecipe, tracker: Any = None,
               run_tags: Mapping[str, str] | None = None) -> TrainResult:
    """GRPO on `prompt/ground_truth/task_id/tools` rows; saves a plain HF model to `recipe.output_dir`.
    `TrainResult.tokens` counts prompt + completion tokens (TRL's `num_input_tokens_seen`)."""
    rows = list(rows)
    data, skipped = rl_dataset(rows)  # validate before loading a tokenizer (tracemill's format renders anything)
    if data:
        data, skipped = rl_dataset(rows, load_tokenizer(recipe.base_model))  # the model's own template
    if not data:
        raise ValueError(f"no usable RL row ({skipped} skipped): nothing to train on")
    params = {"train_rows": len(data), "skipped_rows": skipped,
              "reward_functions": "final_answer_reward,tool_call_reward,format_reward"}
    if launch.should_launch(recipe.devices):
        return launch.launch("grpo", {"data": data, "params": params}, recipe, tracker, run_tags)
    return fit_grpo(data, params, recipe, tracker, run_tags)


def fit_grpo(data: list[dict[str, str]], params: Mapping[str, Any], recipe: RLRecipe, tracker: Any = None,
             run_tags: Mapping[str, str] | None = None, callbacks: Sequence[Any] = ()) -> TrainResult:
    """Train on prepared prompts in this process (one rank of a launched group, or alone)."""
    return run_tracked("grpo", recipe, _build(data, recipe), params, tracker, run_tags, callbacks)


def fit_launched(payload: Mapping[str, Any], recipe: RLRecipe, tracker: Any = None,
                 run_tags: Mapping[str, str] | None = None, callbacks: Sequence[Any] = ()) -> TrainResult:
    """One rank of a launched group: `payload` is the prompts and params `train_grpo` prepared."""
    return fit_grpo(payload["data"], payload["params"], recipe, tracker, run_tags, callbacks)
