"""GRPO with TRL on tracemill's chat format and the demo world's verifiable rewards, tracked in MLflow.

Single-turn: each prompt (tool list + system + user, rendered as *text* with `chat_format.render_prompt`,
ending with the assistant header) gets `num_generations` sampled next turns, scored by the reward functions
in `pipeline.demo.rewards` (first tool call, final answer, format). Tools are not executed during the rollout:
multi-step tool use through GRPO's `tools=` would need a chat template TRL can parse (e.g. its qwen3 one) and
is left out on purpose; the first action is where a tiny model's mistakes start anyway.

Why text prompts: our tokenizer's template is custom, so TRL's conversational path would decode completions
without a response parser anyway; text keeps prompt tokens identical to the SFT rendering (no BOS is added by
our tokenizer; a tokenizer that adds one gets it here as in `chat_format.encode_segments`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pydantic import Field, model_validator

from pipeline.environment import DEFAULT_ENVIRONMENT, RewardFunction, load_environment
from pipeline.train.preference import (
    LoraFields,
    common_args,
    load_policy,
    lora_config,
    prompt_text,
    run_tracked,
)
from pipeline.train.sft import RecipeBase, TrainResult


class RLRecipe(RecipeBase, LoraFields):
    """Everything that decides a GRPO run; logged as MLflow params and saved next to the model."""

    base_model: str = Field(description="HF model id or local model directory to start from (ideally SFT-trained).")
    output_dir: str = Field(description="Where the tuned model + tokenizer are saved (plain HF layout, LoRA merged).")
    max_steps: int = Field(50, ge=1, description="Optimizer steps.")
    learning_rate: float = Field(1e-4, gt=0, description="Peak learning rate.")
    per_device_batch_size: int = Field(8, ge=1, description="Completions per step; a multiple of num_generations.")
    num_generations: int = Field(4, ge=2, description="Completions sampled per prompt (the group GRPO normalises in).")
    max_completion_length: int = Field(48, ge=1, description="Generated tokens per completion (one assistant turn).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature during rollouts.")
    beta: float = Field(0.0, ge=0, description="KL coefficient to the reference model; 0 (TRL's default) loads none.")
    reward_weights: list[float] | None = Field(
        None, description="Weights of (final_answer, tool_call, format) rewards; None = all 1.")
    seed: int = Field(0, description="Seed for data order and sampling.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Share of steps with linear warmup.")
    lr_scheduler_type: str = Field("constant", description="transformers scheduler name.")
    logging_steps: int = Field(1, ge=1, description="Log loss / rewards every N steps.")
    lora: bool = Field(False, description="Train LoRA adapters instead of all weights.")
    run_name: str | None = Field(None, description="MLflow run name (default: grpo-<output dir name>).")

    @model_validator(mode="after")
    def _whole_groups(self) -> RLRecipe:
        if (self.per_device_batch_size * self.gradient_accumulation_steps * self.devices) % self.num_generations:
            raise ValueError("per_device_batch_size * gradient_accumulation_steps * devices must be a multiple of "
                             "num_generations (whole groups per generation batch)")
        if self.reward_weights is not None and len(self.reward_weights) != 3:
            raise ValueError("reward_weights needs 3 values: final_answer, tool_call, format")
        return self


def rl_dataset(rows: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, str]], int]:
    """`prompt` text + `ground_truth` / `task_id` strings (handed to the reward functions); rows without a
    renderable prompt or a ground truth are skipped."""
    out, skipped = [], 0
    for row in rows:
        truth = row.get("ground_truth")
        try:
            if truth is None or truth == "":
                raise ValueError("no ground truth")
            out.append({"prompt": prompt_text(row["prompt"], row.get("tools")),
                        "ground_truth": truth if isinstance(truth, str) else json.dumps(truth),
                        "task_id": str(row.get("task_id") or "")})
        except (ValueError, KeyError, TypeError):
            skipped += 1
    return out, skipped


def reward_functions(eos_token_id: int | None, environment: str = DEFAULT_ENVIRONMENT) -> list[RewardFunction]:
    """The environment's GRPO rewards (`pipeline.environment`; the demo world's by default)."""
    return load_environment(environment).reward_functions(eos_token_id)


def _build(data: list[dict[str, str]], recipe: RLRecipe,
           environment: str = DEFAULT_ENVIRONMENT) -> Callable[[list], Any]:
    def build(callbacks: list) -> Any:
        import datasets
        from trl import GRPOConfig, GRPOTrainer

        model, tokenizer = load_policy(recipe.base_model, recipe.device)
        config = GRPOConfig(
            **common_args(recipe), num_generations=recipe.num_generations,
            max_completion_length=recipe.max_completion_length, temperature=recipe.temperature, beta=recipe.beta,
            reward_weights=recipe.reward_weights, use_vllm=False, log_completions=False)
        return GRPOTrainer(model=model, reward_funcs=reward_functions(tokenizer.eos_token_id, environment), args=config,
                           train_dataset=datasets.Dataset.from_list(data), processing_class=tokenizer,
                           callbacks=callbacks,
                           peft_config=lora_config(recipe.lora_r, recipe.lora_alpha) if recipe.lora else None)

    return build


def train_grpo(rows: Iterable[Mapping[str, Any]], recipe: RLRecipe, tracker: Any = None,
               run_tags: Mapping[str, str] | None = None, environment: str = DEFAULT_ENVIRONMENT) -> TrainResult:
    """GRPO on `prompt/ground_truth/task_id/tools` rows; saves a plain HF model to `recipe.output_dir`.
    `TrainResult.tokens` counts prompt + completion tokens (TRL's `num_input_tokens_seen`)."""
    data, skipped = rl_dataset(rows)
    if not data:
        raise ValueError(f"no usable RL row ({skipped} skipped): nothing to train on")
    params = {"train_rows": len(data), "skipped_rows": skipped,
              "reward_functions": "final_answer_reward,tool_call_reward,format_reward"}
    from pipeline.train import launch

    if launch.should_launch(recipe.devices):
        return launch.launch("grpo", {"data": data, "params": params}, recipe, tracker, run_tags)
    return fit_grpo(data, params, recipe, tracker, run_tags, environment=environment)


def fit_grpo(data: list[dict[str, str]], params: Mapping[str, Any], recipe: RLRecipe, tracker: Any = None,
             run_tags: Mapping[str, str] | None = None, callbacks: Sequence[Any] = (),
             environment: str = DEFAULT_ENVIRONMENT) -> TrainResult:
    """Train on prepared prompts in this process (one rank of a launched group, or alone)."""
    return run_tracked("grpo", recipe, _build(data, recipe, environment), params, tracker, run_tags, callbacks)
