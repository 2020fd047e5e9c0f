"""GRPO with TRL on the base model's own chat template and the reward functions of the corpus's environment, tracked in MLflow.

Each prompt (tool list + system + user, rendered as *text* with `pipeline.chat.render_prompt`, ending with the
assistant header) gets `num_generations` sampled first turns. They are scored by the spec's `rewards:` (TRL
reward functions, 'module:function') and, with an environment, by `EpisodeReward`: the environment runs the
turn's tool calls and the policy continues the episode to its end, which the environment's reward scores
(`pipeline.train.episode_reward` says why this and not TRL's own `environment_factory`).

Why text prompts: our tokenizer's template is custom, so TRL's conversational path would decode completions
without a response parser anyway; text keeps prompt tokens identical to the SFT rendering (no BOS is added by
our tokenizer; a tokenizer that adds one gets it here as in the template's own text).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pipeline.environment import GuardedReward, RewardFunction, environment_factory, load_reward
from pipeline.jsonio import dumps_json
from pipeline.train import launch
from pipeline.train.devices import generation_backend, machine_facts
from pipeline.train.episode_reward import EpisodeReward
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


def reward_functions(eos_token_id: int | None, recipe: RLRecipe) -> list[RewardFunction]:
    """The recipe's reward functions in order: its `rewards`, then the environment's episode reward."""
    fns: list[RewardFunction] = [GuardedReward(load_reward(ref, eos_token_id), recipe.timeout_s)
                                 for ref in recipe.rewards]
    if recipe.environment:
        fns.append(EpisodeReward(environment_factory(recipe.environment, recipe.environment_config),
                                 max_steps=recipe.episode_max_steps, max_new_tokens=recipe.episode_max_new_tokens,
                                 timeout_s=recipe.timeout_s, tools_in_prompt=recipe.tools_in_prompt))
    if not fns:
        raise ValueError("GRPO needs reward functions: set rewards: [module:function, ...] or an environment")
    return fns


def _build(data: list[dict[str, str]], recipe: RLRecipe) -> Callable[[list], Any]:
    def build(callbacks: list) -> Any:
        import datasets
        from trl import GRPOConfig, GRPOTrainer

        model, tokenizer = load_policy(recipe.base_model, recipe.device)
        vllm = generation_backend(recipe.device, machine_facts()) == "vllm"  # colocated: same GPU, same process
        config = GRPOConfig(
            **common_args(recipe), num_generations=recipe.num_generations,
            max_completion_length=recipe.max_completion_length, temperature=recipe.temperature, beta=recipe.beta,
            reward_weights=recipe.reward_weights, log_completions=False, use_vllm=vllm,
            **({"vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.3} if vllm else {}))
        fns = reward_functions(tokenizer.eos_token_id, recipe)
        trainer = GRPOTrainer(model=model, reward_funcs=fns, args=config,
                              train_dataset=datasets.Dataset.from_list(data), processing_class=tokenizer,
                              callbacks=callbacks,
                              peft_config=lora_config(recipe.lora_r, recipe.lora_alpha) if use_lora(recipe) else None)
        for fn in fns:
            if isinstance(fn, EpisodeReward):
                fn.bind(trainer.model, tokenizer)
        return trainer

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
    names = [*recipe.rewards, *([f"episode:{recipe.environment}"] if recipe.environment else [])]
    if not names:
        raise ValueError("GRPO needs reward functions: set rewards: [module:function, ...] or an environment")
    params = {"train_rows": len(data), "skipped_rows": skipped, "reward_functions": ",".join(names)}
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
